#!/usr/bin/env bash
# Builds the Debian package (and, with --rpm, the EL 9 RPM from the same
# tree) from a release build. Debian 12, as root.
#   ./packaging/build.sh          -> target/debian/pam-totp_*.deb
#   ./packaging/build.sh --rpm    -> also target/rpm/RPMS/x86_64/pam_totp-*.rpm
# Steps: release build; manual pages (the hand-written pam_totp.8 and
# pam_totp.conf.5, and totpctl's and totp's generated from their clap
# definitions) and
# shell completions into target/package/; then cargo-deb, and rpmbuild.
set -euo pipefail
cd "$(dirname "$0")/.."
# Started with sudo: its variables would make `totpctl manpages` refuse
# (README: "Help desk through sudo"); packaging is root's own work.
unset SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND
. scripts/lib/debian.sh
ensure_debian_packages dpkg-dev binutils libpam0g-dev
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> installing cargo-deb"
    cargo install --locked cargo-deb
fi

cargo build --release --quiet --workspace   # libpam_totp.so, totpctl and totp (own crates)
./scripts/build-modules.sh                  # target/modules/: pam_totp.so, pam_totp_postgresql.so
out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions" "$out/modules"
# cargo-deb strips only what it finds in target/release; the two modules
# come from target/modules/ (the tests' copies stay as built).
cp target/modules/pam_totp.so target/modules/pam_totp_postgresql.so "$out/modules/"
strip --strip-unneeded "$out"/modules/*.so
target/release/totpctl manpages "$out/man" >/dev/null
cargo run --release --quiet -p totp --example totp_manpage -- "$out/man" >/dev/null
cp packaging/man/pam_totp.8 packaging/man/pam_totp.conf.5 "$out/man/"
gzip -9n "$out"/man/*
target/release/totpctl completions bash >"$out/completions/totpctl"
target/release/totpctl completions zsh >"$out/completions/_totpctl"

echo "==> cargo deb"
cargo deb --no-build --quiet >/dev/null
deb=$(ls -t target/debian/pam-totp_*.deb | head -1)
echo "$deb"

if [[ ${1:-} == --rpm ]]; then
    ensure_debian_packages rpm
    echo "==> rpmbuild (packaging/rpm/pam_totp.spec, from this tree)"
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
    rpmbuild -bb --quiet --nodeps \
        --define "_topdir $PWD/target/rpm" \
        --define "prebuilt_tree $PWD" \
        --define "version_from_cargo $version" \
        --define "__brp_compress /bin/true" \
        packaging/rpm/pam_totp.spec
    rpm=$(ls -t target/rpm/RPMS/*/pam_totp-*.rpm | head -1)
    echo "$rpm"
    if command -v rpmlint >/dev/null; then
        echo "==> rpmlint"
        rpmlint -r packaging/rpm/pam_totp.rpmlintrc packaging/rpm/pam_totp.spec "$rpm"
    fi
fi
