#!/usr/bin/env bash
# What one login costs one process, counted rather than timed (issue 18:
# repeatable on a busy machine): instructions (valgrind --tool=callgrind),
# page faults (perf stat, where the kernel allows it), system calls and
# fsyncs (strace -f -c), for pam_totp as installed (target/modules/pam_totp.so,
# SQLite store), google-authenticator-libpam and pam_oath, each through
# examples/pam_once (pam_start, pam_authenticate with the right code,
# pam_end), the users through nss_wrapper as in the bench. The store's WAL
# is in the same state before every run. Debian 12, as root.
#   ./scripts/count-login.sh            the three modules
#   MODULES="/path/a.so /path/b.so" ./scripts/count-login.sh   other pam_totp builds too
#   CALLGRIND_DIR=/some/dir ./scripts/count-login.sh   keeps callgrind.out.<module> there
#     (callgrind_annotate --inclusive=yes shows where the instructions went)
# docs/performance.md ("Issue 18") has the figures and what they mean.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/debian.sh
ensure_debian_packages valgrind strace sqlite3 oathtool libnss-wrapper \
    libpam-google-authenticator libpam-oath
./scripts/build-modules.sh
cargo build --release --quiet --example pam_once
once=$PWD/target/release/examples/pam_once
totpctl=$PWD/target/release/totpctl

root=/run/pam_totp-tests
mkdir -p "$root" && chmod 0755 "$root"
dir=$(mktemp -d "$root/count-login.XXXXXX")
chmod 0755 "$dir"
trap 'rm -rf "$dir"' EXIT
key_b32=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ
key_hex=3132333435363738393031323334353637383930

printf 'root:x:0:0:root:/root:/bin/sh\nu0:x:20000:100::/nonexistent:/bin/false\n' >"$dir/passwd"
printf 'root:x:0:\nusers:x:100:\n' >"$dir/group"
mkdir -m 0700 "$dir/state" "$dir/ga"
db=$dir/state/totp.db
"$totpctl" --db "$db" init >/dev/null
sqlite3 "$db" "INSERT INTO tokens (user, device, kind, secret, algorithm, digits, period, created, confirmed)
               VALUES ('u0', 'default', 'totp', x'$key_hex', 'sha1', 6, 30, 0, 0)"

services=()
add() { # name, PAM line
    mkdir -p "$dir/svc-$1"
    echo "auth required $2" >"$dir/svc-$1/bench"
    services+=("$1")
}
add pam_totp "$PWD/target/modules/pam_totp.so db=$db"
n=0
for extra in ${MODULES:-}; do
    n=$((n + 1))
    add "pam_totp-$n" "$extra db=$db"
done
add google-authenticator "pam_google_authenticator.so secret=$dir/ga/\${USER} user=root allowed_perm=0600"
add pam_oath "pam_oath.so usersfile=$dir/users.oath window=1"

reset() { # the same state before every run: the user's step unused, the WAL
    # checkpointed and kept (as the module leaves it: no checkpoint on close),
    # then the reset's own frames in it
    sqlite3 -cmd ".dbconfig no_ckpt_on_close on" "$db" "PRAGMA wal_checkpoint(TRUNCATE);
        UPDATE tokens SET last_step = NULL WHERE user = 'u0'; DELETE FROM failures; DELETE FROM guesses;" >/dev/null
    printf '%s\n" DISALLOW_REUSE\n" TOTP_AUTH\n' "$key_b32" >"$dir/ga/u0"
    chmod 0600 "$dir/ga/u0"
    echo "HOTP/T30 u0 - $key_hex" >"$dir/users.oath"
    chmod 0600 "$dir/users.oath"
}
login() { # svc, then a command to run it under
    local svc=$1
    shift
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libnss_wrapper.so NSS_WRAPPER_PASSWD=$dir/passwd \
        NSS_WRAPPER_GROUP=$dir/group "$@" "$once" "$dir/svc-$svc" u0 "$(oathtool --totp -b $key_b32)"
}

printf '| one login, one process | instructions | page faults | system calls | fsyncs |\n|---|---|---|---|---|\n'
for svc in "${services[@]}"; do
    reset
    login "$svc" >/dev/null 2>&1 || true # page cache warm
    reset
    out=$(login "$svc" valgrind --tool=callgrind \
        --callgrind-out-file="${CALLGRIND_DIR:-/dev/null}${CALLGRIND_DIR:+/callgrind.out.$svc}" 2>&1)
    grep -q '^once 0 ' <<<"$out" || echo "warning: $svc did not log in: $(grep '^once' <<<"$out")" >&2
    instructions=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$out")
    reset
    faults=$(login "$svc" perf stat -x, -e page-faults 2>&1 >/dev/null | sed -n 's/^\([0-9]*\),.*page-faults.*/\1/p')
    reset
    login "$svc" strace -f -c -o "$dir/strace" >/dev/null 2>&1
    calls=$(awk '$NF == "total" {print $(NF-2) + 0; exit} ' "$dir/strace")
    [[ -n $calls ]] || calls=$(tail -1 "$dir/strace" | awk '{print $4}')
    syncs=$(awk '/fsync|fdatasync/ {s += $4} END {print s + 0}' "$dir/strace")
    printf '| %s | %s | %s | %s | %s |\n' "$svc" "$instructions" "${faults:-n/a}" "$calls" "$syncs"
done
