#!/usr/bin/env bash
# The whole test suite, as the README's quick start and CI run it.
# Debian 12, as root. Installs what it needs, builds the workspace (the
# module crate and totpctl/) once in release, then runs format, dependency
# (cargo deny, cargo machete) and lint checks, unit tests, the integration
# tests that drive the real libpam (pam_wrapper + pamtester) with codes from
# oathtool, the end-to-end logins through a real sshd and ssh client, a pool
# of two login nodes on one PostgreSQL database, the integration suites once
# more with every store on PostgreSQL, `demo.sh --check`, and the packages:
# .deb built, linted, installed, the end-to-end suite run against the
# installed module, purged (packaging/test-package.sh; it will not run where
# pam-totp is installed for real).
# Extra arguments go to `cargo nextest run` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
# Started through sudo? sudo's variables would make every totpctl the tests
# run act as a help desk's, refusing --db (README: "Help desk through sudo").
unset SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND

. scripts/lib/debian.sh
ensure_debian_packages libpam0g-dev pamtester libpam-wrapper oathtool faketime \
    openssh-server openssh-client libnss-wrapper sqlite3 zbar-tools libpam-google-authenticator libpam-oath \
    man-db groff-base zsh postgresql pgbouncer
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
# Dependency checks (deny.toml; unused dependencies). Built from source once
# per clean machine (their prebuilt binaries are on GitHub): measured on a
# busy 2-core VM, cargo-deny 4 min 23 s and cargo-machete 1 min 46 s.
if ! cargo deny --version >/dev/null 2>&1; then
    echo "==> installing cargo-deny"
    cargo install --locked cargo-deny
fi
if ! cargo machete --version >/dev/null 2>&1; then
    echo "==> installing cargo-machete"
    cargo install --locked cargo-machete
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> the declared minimum Rust version covers the dependencies"
./scripts/check-msrv.sh
echo "==> cargo deny: licences, banned and duplicate crates, sources (deny.toml)"
cargo deny --workspace check --hide-inclusion-graph bans licenses sources
# The RustSec advisories need their database, a git repository on GitHub,
# which CI cannot reach: a check that fails on the network would say
# nothing about the code. So they are checked only against a copy already
# on this machine, never fetched here. Where github.com is reachable:
#   cargo deny fetch db                          # into ~/.cargo/advisory-dbs
#   cargo deny --workspace check advisories      # fetches too, if needed
advisory_dbs=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
if compgen -G "$advisory_dbs/advisory-db-*" >/dev/null; then
    echo "==> cargo deny: advisories, against the local copy in $advisory_dbs"
    cargo deny --offline --workspace check --hide-inclusion-graph advisories
else
    echo "==> cargo deny advisories: SKIPPED, no local RustSec database (run \`cargo deny fetch db\` where github.com is reachable)"
fi
echo "==> no unused dependencies (cargo machete)"
cargo machete
echo "==> cargo clippy -D warnings (and the build without PostgreSQL for one-node sites)"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo clippy --release --workspace --no-default-features --lib --bins --quiet -- -D warnings
echo "==> cargo build --release --workspace (module, totpctl, tests)"
cargo build --release --workspace --all-targets --quiet
echo "==> the modules as installed: pam_totp.so without the PostgreSQL client, pam_totp_postgresql.so (target/modules/)"
./scripts/build-modules.sh
export PAM_TOTP_REQUIRE_MODULES=1
echo "==> tests (unit, libpam via pam_wrapper, races, real sshd end-to-end, PostgreSQL pool)"
cargo nextest run --release --workspace "$@"
echo "==> the integration suites again, every store on PostgreSQL (a private cluster per test)"
# The suites are modules of one test binary (tests/it/main.rs), selected by
# the first part of each test's path.
PAM_TOTP_TEST_STORE=postgres cargo nextest run --release --workspace \
    -E 'test(/^(pam_login|pam_race|token_life|hostile_input|secrets_stay_secret|store_faults|e2e_sshd|e2e_policies|totp_user)::/)' "$@"
echo "==> the README's demo, logging in by itself"
./scripts/demo.sh --check
echo "==> the packages: build, lint, install, test the installed module, purge"
./packaging/test-package.sh
