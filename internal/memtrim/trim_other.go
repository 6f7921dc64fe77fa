//go:build !linux

package memtrim

import "errors"

func dropPages(start, end uintptr) error { return errors.New("memtrim: not supported") }

func trimCHeap() {}

func evictUnmapped(path string) error { return nil }
