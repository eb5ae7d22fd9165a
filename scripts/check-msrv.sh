#!/usr/bin/env bash
# The rust-version declared in Cargo.toml must be at least the highest
# rust-version any dependency declares: otherwise the declared minimum is a
# promise the build cannot keep. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
ours = next(p for p in meta["packages"] if p["name"] == "pam-totp")
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml declares no rust-version")
needed = max(
    ((version(p["rust_version"]), p["name"], p["rust_version"])
     for p in meta["packages"] if p.get("rust_version") and p["name"] != "pam-totp"),
    default=((0, 0, 0), "-", "0"),
)
if version(declared) < needed[0]:
    sys.exit(f"rust-version {declared} in Cargo.toml is below {needed[2]}, which {needed[1]} needs")
print(f"rust-version {declared}: covers every dependency (highest: {needed[1]} {needed[2]})")
'
