// Package kservev2 is the Go generated from proto/grpc_predict_v2.proto: the KServe v2 (Open Inference Protocol) gRPC service that Triton speaks.
// scripts/gen-proto.sh regenerates it; only this file is written by hand.
package kservev2
