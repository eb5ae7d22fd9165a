#!/usr/bin/env bash
# The rust-version declared in Cargo.toml (the workspace's, which both
# crates inherit) must be at least the highest rust-version any dependency
# declares: otherwise the declared minimum is a promise the build cannot
# keep. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
members = [p for p in meta["packages"] if p["id"] in meta["workspace_members"]]
declared = {p["name"]: p.get("rust_version") for p in members}
if not all(declared.values()):
    sys.exit(f"a workspace crate declares no rust-version: {declared}")
if len(set(declared.values())) != 1:
    sys.exit(f"the workspace crates declare different rust-versions: {declared}")
declared = next(iter(declared.values()))
needed = max(
    ((version(p["rust_version"]), p["name"], p["rust_version"])
     for p in meta["packages"]
     if p.get("rust_version") and p["id"] not in meta["workspace_members"]),
    default=((0, 0, 0), "-", "0"),
)
if version(declared) < needed[0]:
    sys.exit(f"rust-version {declared} in Cargo.toml is below {needed[2]}, which {needed[1]} needs")
print(f"rust-version {declared}: covers every dependency (highest: {needed[1]} {needed[2]})")
'
