#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/. Needs protoc (Debian's
# protobuf-compiler) and the Go plugins, which it installs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
export PATH="$(go env GOPATH)/bin:$PATH"
command -v protoc-gen-go >/dev/null || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
command -v protoc-gen-go-grpc >/dev/null || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
for f in proto/*.proto; do
  protoc -I proto -I /usr/include \
    --go_out=. --go_opt=module=github.com/imageflowcanvas/imageflow \
    --go-grpc_out=. --go-grpc_opt=module=github.com/imageflowcanvas/imageflow \
    "$f"
done
