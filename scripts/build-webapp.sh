#!/usr/bin/env bash
# Builds the web UI (webapp/) into webapp/dist/ui, which the Go binary embeds
# (webapp/embed.go). Run from anywhere; rebuild the Go binary afterwards.
# Installs node modules only when they are missing or older than the lockfile.
# `npm run build` first regenerates the API types (src/api/schema.d.ts) from
# the server's OpenAPI document (`go run ./cmd/imageflow openapi`), so a
# server schema change the UI does not follow fails the type check.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/webapp"

if ! command -v npm >/dev/null 2>&1; then
  echo "build-webapp: npm not found; install Node.js 20.19+ (with npm) first" >&2
  exit 1
fi

stamp=node_modules/.package-lock.json # rewritten by npm on every install
need_install=0
if [[ ! -d node_modules || ! -f $stamp ]]; then
  need_install=1
elif [[ -f package-lock.json && package-lock.json -nt $stamp ]] || [[ package.json -nt $stamp ]]; then
  need_install=1
fi

if ((need_install)); then
  if [[ -f package-lock.json ]]; then
    echo "build-webapp: npm ci"
    npm ci --no-audit --no-fund || {
      echo "build-webapp: npm ci failed, trying npm install" >&2
      npm install --no-audit --no-fund
    }
  else
    echo "build-webapp: npm install"
    npm install --no-audit --no-fund
  fi
  touch "$stamp" # so that an unchanged lockfile does not trigger another install
fi

npm run build
echo "build-webapp: built $repo/webapp/dist/ui (rebuild the Go binary to embed it)"
