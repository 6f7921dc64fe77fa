// Package processorv1 is the Go generated from proto/processor.proto: the Processor gRPC service a pipeline step speaks, in any language.
// scripts/gen-proto.sh regenerates it; only this file is written by hand.
package processorv1
