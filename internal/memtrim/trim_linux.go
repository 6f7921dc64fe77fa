package memtrim

/*
#include <malloc.h>
*/
import "C"

import (
	"os"
	"syscall"
)

// dropPages unmaps the resident pages of [start, end); the next access
// faults them in again from the page cache or the file.
func dropPages(start, end uintptr) error {
	_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_DONTNEED)
	if errno != 0 {
		return errno
	}
	return nil
}

// evictUnmapped drops from the page cache the pages of a file that no
// process maps any more, so that a later fault maps only what it reads
// instead of every cached page around it.
func evictUnmapped(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	const fadvDontNeed = 4
	_, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// trimCHeap hands the C heap's free pages back (glibc keeps what libraries'
// constructors freed).
func trimCHeap() { C.malloc_trim(0) }
