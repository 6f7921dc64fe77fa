package webrtc

import "strings"

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

const publishPage = ``
