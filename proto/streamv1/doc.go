// Package streamv1 is the Go generated from proto/stream.proto: StreamService: frames pushed through a pipeline (Process) and cameras published over gRPC (Publish).
// scripts/gen-proto.sh regenerates it; only this file is written by hand.
package streamv1
