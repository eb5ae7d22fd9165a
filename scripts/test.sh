#!/usr/bin/env bash
# The whole test suite, as the README's quick start and CI run it.
# Debian 12, as root. Installs what it needs, builds once in release, then
# runs format and lint checks, unit tests, the integration tests that drive
# the real libpam (pam_wrapper + pamtester) with codes from oathtool, the
# end-to-end logins through a real sshd and ssh client, a pool of two login
# nodes on one PostgreSQL database, the integration suites once more with
# every store on PostgreSQL, `demo.sh --check`,
# and the packages: .deb built, linted, installed, the end-to-end suite run
# against the installed module, purged (packaging/test-package.sh; it will
# not run where pam-totp is installed for real).
# Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
# Started through sudo? sudo's variables would make every totpctl the tests
# run act as a help desk's, refusing --db (README: "Help desk through sudo").
unset SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND

. scripts/lib/debian.sh
ensure_debian_packages libpam0g-dev pamtester libpam-wrapper oathtool faketime \
    openssh-server openssh-client libnss-wrapper sqlite3 zbar-tools libpam-google-authenticator libpam-oath \
    man-db groff-base zsh postgresql
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> the declared minimum Rust version covers the dependencies"
./scripts/check-msrv.sh
echo "==> cargo clippy -D warnings (and the build without PostgreSQL for one-node sites)"
cargo clippy --release --all-targets --quiet -- -D warnings
cargo clippy --release --no-default-features --lib --bin totpctl --quiet -- -D warnings
echo "==> cargo build --release (module, totpctl, tests)"
cargo build --release --all-targets --quiet
echo "==> tests (unit, libpam via pam_wrapper, races, real sshd end-to-end, PostgreSQL pool)"
cargo nextest run --release "$@"
echo "==> the integration suites again, every store on PostgreSQL (a private cluster per test)"
# The suites are modules of one test binary (tests/it/main.rs), selected by
# the first part of each test's path.
PAM_TOTP_TEST_STORE=postgres cargo nextest run --release \
    -E 'test(/^(pam_login|pam_race|token_life|hostile_input|secrets_stay_secret|store_faults|e2e_sshd|e2e_policies)::/)' "$@"
echo "==> the README's demo, logging in by itself"
./scripts/demo.sh --check
echo "==> the packages: build, lint, install, test the installed module, purge"
./packaging/test-package.sh
