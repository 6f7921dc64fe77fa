#!/usr/bin/env bash
# Regenerates the Go code of every .proto under proto/, and the Python stubs
# of the processor contract for the Python kit (processors/python). Needs
# protoc (Debian's protobuf-compiler, with libprotobuf-dev for the well-known
# types), Debian's gRPC Python plugin (protobuf-compiler-grpc) and the Go
# plugins, which it installs when missing.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# protoc and the well-known types it imports (google/protobuf/struct.proto).
need_apt protobuf-compiler libprotobuf-dev protobuf-compiler-grpc
need_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
need_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
for f in proto/*.proto; do
  protoc -I proto -I /usr/include \
    --go_out=. --go_opt=module=github.com/imageflowcanvas/imageflow \
    --go-grpc_out=. --go-grpc_opt=module=github.com/imageflowcanvas/imageflow \
    "$f"
done
# Python: Debian's grpc_python_plugin matches its python3-grpcio (1.51);
# python3-grpc-tools bundles a protoc too old for proto3 `optional`.
PY_GEN=processors/python/imageflow_processor/gen
rm -f "$PY_GEN"/*_pb2.py "$PY_GEN"/*_pb2_grpc.py
protoc -I proto -I /usr/include --python_out="$PY_GEN" --grpc_out="$PY_GEN" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin proto/bus.proto proto/processor.proto
protoc -I processors/python/proto --python_out="$PY_GEN" --grpc_out="$PY_GEN" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin processors/python/proto/health.proto
