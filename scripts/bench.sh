#!/usr/bin/env bash
# pam_totp against google-authenticator-libpam and pam_oath, side by side in
# one run (benches/pam_bench.rs). Debian 12, as root.
#   ./scripts/bench.sh                 300 logins per row, 100 race trials
#   LOGINS=50 RACE_TRIALS=10 ./scripts/bench.sh     a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/debian.sh
ensure_debian_packages libpam0g-dev oathtool libpam-google-authenticator libpam-oath libnss-wrapper \
    postgresql pgbouncer openssl
# The module as installed: target/modules/pam_totp.so (no PostgreSQL
# client) and pam_totp_postgresql.so beside it (the bench's PostgreSQL
# columns go through the hand-over).
./scripts/build-modules.sh
cargo build --release --quiet --example pam_once
echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
cargo bench --quiet --bench pam_bench
