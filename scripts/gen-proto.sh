#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/. Needs protoc (Debian's
# protobuf-compiler, with libprotobuf-dev for the well-known types) and the Go
# plugins, which it installs when missing.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# protoc and the well-known types it imports (google/protobuf/struct.proto).
need_apt protobuf-compiler libprotobuf-dev
need_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
need_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
for f in proto/*.proto; do
  protoc -I proto -I /usr/include \
    --go_out=. --go_opt=module=github.com/imageflowcanvas/imageflow \
    --go-grpc_out=. --go-grpc_opt=module=github.com/imageflowcanvas/imageflow \
    "$f"
done
