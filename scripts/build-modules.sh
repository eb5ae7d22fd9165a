#!/usr/bin/env bash
# The two PAM modules, as they are installed, into target/modules/ (issue 18):
#   pam_totp.so             the crate built without the `postgres` feature
#                           (2.6 MB instead of 6.1: SQLite sites load no
#                           PostgreSQL client, tokio, rustls or ring);
#   pam_totp_postgresql.so  the full build (target/release/libpam_totp.so),
#                           which pam_totp.so hands a login to when the store
#                           is `postgresql://` (src/pam/forward.rs).
# Cargo unifies features across one build, so the lean module needs a
# build, and a target directory, of its own (target/lean/); it is built
# with the `module` profile (Cargo.toml: for size, fat LTO).
#   ./scripts/build-modules.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace
cargo build --profile module --quiet -p pam-totp --lib --no-default-features --target-dir target/lean
mkdir -p target/modules
cp target/lean/module/libpam_totp.so target/modules/pam_totp.so.new
mv target/modules/pam_totp.so.new target/modules/pam_totp.so
cp target/release/libpam_totp.so target/modules/pam_totp_postgresql.so.new
mv target/modules/pam_totp_postgresql.so.new target/modules/pam_totp_postgresql.so
