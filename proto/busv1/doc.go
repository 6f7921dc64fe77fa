// Package busv1 is the Go generated from proto/bus.proto: every payload on the bus (access units, frames, results, jobs, progress, metrics, cameras, pipelines).
// scripts/gen-proto.sh regenerates it; only this file is written by hand.
package busv1
