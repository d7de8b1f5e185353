#!/usr/bin/env bash
# Runs every test. Installs the pinned Azurite from npm the first time
# (tools/azurite/package-lock.json); the tests start and stop it themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f tools/azurite/package-lock.json ] && [ ! -x tools/azurite/node_modules/.bin/azurite ]; then
  npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
fi
cargo test --locked "$@"
