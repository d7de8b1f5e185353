#!/usr/bin/env bash
# Azurite for dormant's tests and for local runs against emulated storage.
#
#   scripts/azurite.sh install   npm ci from the pinned lock file (tools/azurite)
#   scripts/azurite.sh run       start Azurite on the default ports (10000 blob,
#                                10001 queue, 10002 table) in memory; pair with
#                                AzureWebJobsStorage=UseDevelopmentStorage=true
#
# The integration tests start their own Azurite (free ports, in memory) from
# tools/azurite; to reuse a running one instead export
#   DORMANT_TEST_AZURITE_BLOB=http://127.0.0.1:10000/devstoreaccount1
#   DORMANT_TEST_AZURITE_QUEUE=http://127.0.0.1:10001/devstoreaccount1
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
  install)
    npm ci --prefix "$root/tools/azurite" --no-audit --no-fund
    ;;
  run)
    bin="$root/tools/azurite/node_modules/.bin/azurite"
    [[ -x "$bin" ]] || { echo "Azurite is not installed: run $0 install" >&2; exit 2; }
    # --skipApiVersionCheck: the Rust SDK's x-ms-version is newer than Azurite's.
    exec "$bin" --inMemoryPersistence --skipApiVersionCheck --disableTelemetry \
      --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1
    ;;
  *)
    echo "usage: $0 install|run" >&2
    exit 2
    ;;
esac
