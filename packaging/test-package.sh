#!/usr/bin/env bash
# Proves the packages: builds the .deb (lintian: no errors) and the EL 9
# RPM (rpmlint: no errors), installs the .deb with dpkg, checks what it put
# where and that no PAM stack changed, renders every manual page, runs the
# end-to-end suite (real sshd) against the *installed* module and totpctl,
# and the totp suite against the installed /usr/bin/totp, checks that
# dpkg-statoverride keeps its set-uid bit away,
# purges, and checks that nothing is left but the store. Then installs and
# purges once more without a store: nothing at all is left.
# Debian 12, as root, on a machine where pam-totp is not installed
# otherwise (CI's fresh machine; scripts/test.sh runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/debian.sh
ensure_debian_packages lintian rpm rpmlint man-db groff-base

fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if dpkg-query -W -f='${Status}' pam-totp 2>/dev/null | grep -q 'installed'; then
    fail "pam-totp is already installed here; this test installs and purges it, so it will not run over a real installation"
fi
if [[ -e /var/lib/pam_totp || -e /etc/security/pam_totp.conf ]]; then
    fail "/var/lib/pam_totp or /etc/security/pam_totp.conf exists already; this test needs a machine without them"
fi

# From here on the package and the store are this test's: leave the machine
# as it was found, also when a step fails.
cleanup() {
    DEBIAN_FRONTEND=noninteractive dpkg --purge pam-totp </dev/null >/dev/null 2>&1 || true
    rm -rf /var/lib/pam_totp
}
trap cleanup EXIT

step "building the packages"
./packaging/build.sh --rpm
deb=$(ls -t target/debian/pam-totp_*.deb | head -1)

step "lintian $deb"
lintian --fail-on error --allow-root "$deb"

pam_before=$(cd /etc/pam.d && sha256sum -- * | sha256sum)
mapfile -t files < <(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {sub(/^\./, "", $6); print $6}')

step "dpkg -i"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null
for f in "${files[@]}"; do [[ -e $f ]] || fail "installed package lacks $f"; done
[[ -f /usr/lib/x86_64-linux-gnu/security/pam_totp.so ]] || fail "module not in the PAM directory"
[[ -f /usr/lib/x86_64-linux-gnu/security/pam_totp_postgresql.so ]] \
    || fail "pam_totp_postgresql.so (what pam_totp.so hands postgresql:// stores to) not in the PAM directory"
[[ -x /usr/sbin/totpctl ]] || fail "no /usr/sbin/totpctl"
[[ $(stat -c '%a %U %G' /usr/bin/totp) == "4755 root root" ]] \
    || fail "/usr/bin/totp is $(stat -c '%a %U %G' /usr/bin/totp), not 4755 root root"
[[ $(stat -c '%a %U %G' /var/lib/pam_totp) == "700 root root" ]] \
    || fail "/var/lib/pam_totp is $(stat -c '%a %U %G' /var/lib/pam_totp), not 700 root root"
grep -qx /etc/security/pam_totp.conf /var/lib/dpkg/info/pam-totp.conffiles \
    || fail "pam_totp.conf is not a conffile"
[[ $(cd /etc/pam.d && sha256sum -- * | sha256sum) == "$pam_before" ]] \
    || fail "installing changed a file in /etc/pam.d"
echo "files in place, store directory 0700 root, conffile registered, /etc/pam.d untouched"

step "manual pages render (man -l, groff warnings on)"
for page in /usr/share/man/man5/pam_totp.conf.5.gz /usr/share/man/man8/pam_totp.8.gz \
    /usr/share/man/man8/totpctl*.8.gz /usr/share/man/man1/totp.1.gz; do
    warnings=$(MANWIDTH=80 man --warnings=w -l "$page" 2>&1 >/dev/null || true)
    [[ -z $warnings ]] || fail "$page: $warnings"
    [[ $(MANWIDTH=80 man -l "$page" 2>/dev/null | wc -l) -gt 10 ]] || fail "$page renders empty"
done
man -w pam_totp >/dev/null && man -w 5 pam_totp.conf >/dev/null && man -w totpctl >/dev/null \
    && man -w 1 totp >/dev/null \
    || fail "man cannot find the installed pages"
bash -n /usr/share/bash-completion/completions/totpctl || fail "bash completion does not parse"
echo "$(ls /usr/share/man/man8/totpctl*.8.gz | wc -l) totpctl pages, pam_totp(8), pam_totp.conf(5), totp(1): no warnings"

step "totpctl init, then the end-to-end suite against the installed module"
/usr/sbin/totpctl init
PAM_TOTP_MODULE=pam_totp.so PAM_TOTP_TOTPCTL=/usr/sbin/totpctl PAM_TOTP_TOTP=/usr/bin/totp \
    cargo nextest run --release --workspace -E 'test(/^(e2e_sshd|totp_user)::/)' --no-fail-fast

step "dpkg-statoverride takes the set-uid bit of totp away, and an upgrade keeps it away"
dpkg-statoverride --add root root 0755 /usr/bin/totp
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null >/dev/null
mode=$(stat -c '%a' /usr/bin/totp)
dpkg-statoverride --remove /usr/bin/totp
[[ $mode == 755 ]] || fail "after dpkg-statoverride and a reinstall /usr/bin/totp is $mode, not 755"
echo "/usr/bin/totp 0755 after a reinstall under the override"

step "dpkg --purge (a store exists: it stays, nothing else does)"
DEBIAN_FRONTEND=noninteractive dpkg --purge pam-totp </dev/null
for f in "${files[@]}"; do [[ ! -e $f ]] || fail "purge left $f"; done
[[ ! -e /etc/security/pam_totp.conf ]] || fail "purge left the conffile"
[[ -f /var/lib/pam_totp/pam_totp.db ]] || fail "purge removed the store"
left=$(find /var/lib/pam_totp -mindepth 1 ! -name 'pam_totp.db' ! -name 'pam_totp.db-wal' ! -name 'pam_totp.db-shm')
[[ -z $left ]] || fail "purge left more than the store: $left"
echo "package files and conffile gone; /var/lib/pam_totp/pam_totp.db kept"
rm -rf /var/lib/pam_totp

step "dpkg -i, dpkg --purge without a store: nothing left at all"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" </dev/null >/dev/null
DEBIAN_FRONTEND=noninteractive dpkg --purge pam-totp </dev/null >/dev/null
[[ ! -e /var/lib/pam_totp ]] || fail "purge left an empty /var/lib/pam_totp"
for f in "${files[@]}"; do [[ ! -e $f ]] || fail "purge left $f"; done
echo "package: built, linted, installed, tested through sshd, purged"
