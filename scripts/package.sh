#!/usr/bin/env bash
# Builds dist/dormant.zip in the layout the Functions host expects:
#   host.json, one folder per function (from functions/), and the release
#   binary `dormant` with its run bit, all at the root of the archive.
# Usage: scripts/package.sh [OUTPUT.zip]
#   DORMANT_PACKAGE_BINARY=path  package this binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist/dormant.zip}"
bin="${DORMANT_PACKAGE_BINARY:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/dormant
fi
[ -x "$bin" ] || { echo "package: $bin is not an executable" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
python3 - "$bin" "$out" <<'PY'
import os, sys, zipfile
binary, out = sys.argv[1], sys.argv[2]
tmp = out + ".tmp"
def add(z, src, name, mode):
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.create_system = 3  # unix, so the host honours the mode bits
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read(), compresslevel=6)
with zipfile.ZipFile(tmp, "w") as z:
    add(z, "host.json", "host.json", 0o644)
    for fn in sorted(os.listdir("functions")):
        path = os.path.join("functions", fn, "function.json")
        if os.path.isfile(path):
            add(z, path, f"{fn}/function.json", 0o644)
    add(z, binary, "dormant", 0o755)
os.replace(tmp, out)
print(out)
PY
