#!/usr/bin/env bash
# Installs what `imageflow serve` needs, builds the web UI and the binary.
# Idempotent: a second run only rebuilds what changed.
source "$(dirname "$0")/lib.sh"
need_apt "${PRODUCT_APT[@]}"
need_node
need_models
bash "$ROOT/scripts/build-webapp.sh"
mkdir -p "$ROOT/bin"
(cd "$ROOT" && go build -o bin/imageflow ./cmd/imageflow)
echo "built $ROOT/bin/imageflow" >&2
