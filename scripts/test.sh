#!/usr/bin/env bash
# Runs every test. Installs what the tests need the first time: the pinned
# Azurite from npm (tools/azurite/package-lock.json; the tests start and stop
# it themselves), Debian's chromium for the HTML report check, and
# Microsoft's Python Graph SDK for the simulator conformance test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f tools/azurite/package-lock.json ] && [ ! -x tools/azurite/node_modules/.bin/azurite ]; then
  npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error
fi
# The HTML report is checked in Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi
# Microsoft's Python Graph SDK (pinned) for the simulator conformance test.
venv=.tools/pyenv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/conformance/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
  cp tests/conformance/requirements.txt "$venv/requirements.txt"
fi
export DORMANT_SIM_PYTHON="$PWD/$venv/bin/python"
cargo test --locked "$@"
