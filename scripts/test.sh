#!/usr/bin/env bash
# The second README command: install what the tests need, then run every
# test: Go (unit, integration with real peers, black-box binary), the web
# UI's unit tests, and checks that the generated protobuf code and the UI's
# generated API types are current.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/setup-test.sh"
cd "$ROOT"
export IFC_BIN="$ROOT/bin/imageflow"
# Everything the tests and scripts use must come from what the setup installs
# (a fresh machine has nothing installed by hand).
go run ./scripts/checkdeps
(cd webapp && npm test --silent)
# The committed OpenAPI document and the UI's types generated from it must
# match the server's routes (npm run build regenerates them too).
(cd webapp && npm run gen:api --silent)
git diff --exit-code --stat -- webapp/src/api/ || { echo "webapp/src/api/: OpenAPI document or UI types stale; run scripts/build-webapp.sh and commit" >&2; exit 1; }
# The committed generated code must match the .proto files.
bash scripts/gen-proto.sh
git diff --exit-code --stat -- proto/ processors/python/imageflow_processor/gen/ || { echo "proto/ or processors/python/imageflow_processor/gen/: generated code is stale; run scripts/gen-proto.sh and commit" >&2; exit 1; }
go vet ./...
# Tests of packages run in parallel on 2 cores; -p 2 keeps cgo builds and
# browsers from starving each other.
go test -p 2 -count=1 -timeout 20m "$@" ./...
