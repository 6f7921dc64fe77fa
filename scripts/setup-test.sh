#!/usr/bin/env bash
# Installs everything the tests need: the product's packages plus the real
# peers the tests talk to (Chromium, Prometheus, kcat, MinIO) and protoc.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup-product.sh"
need_apt "${TEST_APT[@]}"
need_go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
need_go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
# MinIO builds from source (several minutes the first time only).
need_go_tool minio "$MINIO_MODULE"
