#!/bin/sh
# Regenerates the web UI's API types (src/api/schema.d.ts) from the server's
# OpenAPI document, which `imageflow openapi` prints without starting a
# server; src/api/openapi.json keeps the document the types were made from,
# so a machine without Go still builds. Run by `npm run build`.
set -eu
webapp="$(cd "$(dirname "$0")/../.." && pwd)"
gen="$webapp/tools/openapi-gen"
cd "$webapp"
if command -v go >/dev/null 2>&1; then
  (cd .. && go run ./cmd/imageflow openapi) >src/api/openapi.json.tmp
  mv src/api/openapi.json.tmp src/api/openapi.json
else
  echo "gen:api: go not found; generating from the committed src/api/openapi.json" >&2
fi
if [ ! -f "$gen/node_modules/.package-lock.json" ] || [ "$gen/package-lock.json" -nt "$gen/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$gen" --no-audit --no-fund
fi
node "$gen/node_modules/openapi-typescript/bin/cli.js" src/api/openapi.json -o src/api/schema.d.ts
