package server

import "github.com/imageflowcanvas/imageflow/redact"

// RedactURL hides the credentials a source URL may carry (user info and
// token-like query values) so it can be shown in responses and logs; it is
// redact.URL, the one policy every adapter uses too.
func RedactURL(raw string) string { return redact.URL(raw) }
