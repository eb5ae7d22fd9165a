#!/usr/bin/env bash
# pam_totp demo: a throwaway sshd on loopback with pam_unix + pam_totp.
#
#   ./scripts/demo.sh           start it, print how to log in, wait for Ctrl-C
#   ./scripts/demo.sh --check   log in once by itself (code from oathtool), exit 0 on success
#
# Debian 12, as root. Installs the Debian packages it needs and builds the
# module. Creates a local user `totpdemo` with a printed password, enrolls
# it, and on exit removes everything it created: the user and its home, the
# sshd, the temporary directory. /etc/pam.d and /etc/ssh are not touched:
# sshd runs in a private mount namespace with its own PAM stack.
set -euo pipefail
cd "$(dirname "$0")/.."
# Started with sudo: its variables would make totpctl refuse --db (README:
# "Help desk through sudo"); this script is root's own work.
unset SUDO_USER SUDO_UID SUDO_GID SUDO_COMMAND
ROOT=$PWD
FIXTURES=$ROOT/tests/fixtures
USER_NAME=totpdemo
USER_COMMENT="pam_totp demo user (removed when the demo ends)"

check=false
case "${1:-}" in
    --check) check=true ;;
    "") ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it creates a user and starts sshd)"
command -v cargo >/dev/null || die "cargo not found: install Rust 1.89 or newer (rustup.rs)"

. scripts/lib/debian.sh
ensure_debian_packages libpam0g-dev oathtool openssh-server openssh-client

say "building pam_totp (release)"
cargo build --release --quiet --workspace
MODULE=$ROOT/target/release/libpam_totp.so
TOTPCTL=$ROOT/target/release/totpctl

if id "$USER_NAME" >/dev/null 2>&1; then
    if [ "$(getent passwd "$USER_NAME" | cut -d: -f5)" = "$USER_COMMENT" ]; then
        userdel --remove --force "$USER_NAME" 2>/dev/null || true   # left by an interrupted demo
    else
        die "a user named $USER_NAME exists and is not the demo's; not touching it"
    fi
fi

# Not under /tmp: the module trusts a store only when every directory above
# it is root's and not group- or world-writable (/tmp is world-writable).
T=$(mktemp -d /run/pam_totp_demo.XXXXXX)
sshd_pid=""
cleanup() {
    if [ -n "$sshd_pid" ]; then
        kill "$sshd_pid" 2>/dev/null || true
        wait "$sshd_pid" 2>/dev/null || true
    fi
    userdel --remove --force "$USER_NAME" 2>/dev/null || true
    rm -rf "$T"
    $check || echo "demo: removed the user $USER_NAME, the sshd and $T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p /run/sshd "$T/pam.d"
ssh-keygen -q -t ed25519 -N '' -f "$T/ssh_host_ed25519_key"
cp "$MODULE" "$T/pam_totp.so"
cat > "$T/pam.d/sshd" <<EOF
auth     required pam_unix.so
auth     required $T/pam_totp.so db=$T/pam_totp.db
account  required pam_unix.so
session  required pam_permit.so
EOF
printf 'auth required pam_deny.so\naccount required pam_deny.so\n' > "$T/pam.d/other"

PASSWORD="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
useradd --create-home --shell /bin/bash --comment "$USER_COMMENT" "$USER_NAME"
echo "$USER_NAME:$PASSWORD" | chpasswd

"$TOTPCTL" --db "$T/pam_totp.db" init >/dev/null
# --no-confirm: the demo skips the confirming code that `totpctl enroll`
# asks for on a terminal (or that `totpctl confirm` gives later).
ENROLLMENT=$("$TOTPCTL" --db "$T/pam_totp.db" enroll "$USER_NAME" --issuer "pam_totp demo" \
             --no-confirm 2>/dev/null)
KEY=$(printf '%s\n' "$ENROLLMENT" | sed -n 's/^Key: //p' | tr -d ' ')

# sshd binds its port itself on both loopback addresses, from 22022 up
# (below Linux's ephemeral range, 32768-60999), and counts as started only
# when its log says it listens on both: a port someone else holds makes it
# say "Address already in use", and it is started again on the next one.
# (A port probed free first could be taken before sshd binds it, and a
# connect would then reach the other listener.)
listening() {
    grep -qsF "Server listening on 127.0.0.1 port $PORT." "$T/sshd.log" &&
        grep -qsF "Server listening on ::1 port $PORT." "$T/sshd.log"
}
PORT=22022
for _ in $(seq 20); do
    sed -e "s|@PORT@|$PORT|" -e "s|@DIR@|$T|" "$FIXTURES/sshd_config.in" > "$T/sshd_config"
    "$FIXTURES/sshd-isolated" "$T/pam.d" - "$T/sshd_config" > "$T/sshd.log" 2>&1 &
    sshd_pid=$!
    for _ in $(seq 200); do
        if listening || grep -qs "Address already in use" "$T/sshd.log" ||
            ! kill -0 "$sshd_pid" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    listening && break
    kill "$sshd_pid" 2>/dev/null || true
    wait "$sshd_pid" 2>/dev/null || true
    sshd_pid=""
    grep -qs "Address already in use" "$T/sshd.log" || { cat "$T/sshd.log"; die "sshd did not start"; }
    echo "demo: port $PORT is taken, starting sshd on $((PORT + 1))"
    PORT=$((PORT + 1))
done
[ -n "$sshd_pid" ] || die "sshd found no free loopback port from 22022 on"

# Printed once a login succeeded: the user's own command, which this demo
# does not install (it needs set-uid root and /etc/security/pam_totp.conf).
TOTP_HINT="demo: next, try \`totp status\` (your devices, recovery codes left, locks) on a node where totp is installed set-uid root; this demo does not install it (README: \"The user's own command: totp\")"

if $check; then
    say "logging in as $USER_NAME with ssh: password, then a code from oathtool"
    mkdir "$T/answers"
    echo "$PASSWORD" > "$T/answers/passwords"
    echo "@oathtool" > "$T/answers/codes"
    out=$(SSH_ASKPASS="$FIXTURES/askpass" SSH_ASKPASS_REQUIRE=force \
          ASKPASS_DIR="$T/answers" ASKPASS_TOTP_KEY="$KEY" \
          ssh -F /dev/null -T -p "$PORT" -o StrictHostKeyChecking=no \
              -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
              -o PreferredAuthentications=keyboard-interactive \
              -o NumberOfPasswordPrompts=1 \
              "$USER_NAME@127.0.0.1" 'echo "logged in as $(id -un) on $(hostname)"' \
              </dev/null 2>&1) || true
    echo "    prompts: $(paste -sd '|' "$T/answers/prompts" 2>/dev/null)"
    echo "    server said: $out"
    if [[ "$out" == "logged in as $USER_NAME"* ]] \
        && sed -n 1p "$T/answers/prompts" | grep -q 'Password' \
        && sed -n 2p "$T/answers/prompts" | grep -q 'Verification code'; then
        say "demo --check passed: password, then code, then a shell"
        echo "$TOTP_HINT"
        exit 0
    fi
    cat "$T/sshd.log" >&2
    die "demo --check FAILED"
fi

cat <<EOF

  pam_totp demo is running: sshd on 127.0.0.1 and ::1, port $PORT
  PAM stack: pam_unix (password), then pam_totp (code)      [$T/pam.d/sshd]

  user:      $USER_NAME
  password:  $PASSWORD

  Add the token to your authenticator app (it is shown only once):
$(printf '%s\n' "$ENROLLMENT" | sed -n '/^Scan/,$p' | sed 's/^/    /')

  No app at hand? A code for now:   oathtool --totp -b $KEY

  Log in from another terminal:

    ssh -p $PORT -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no $USER_NAME@127.0.0.1

  Then try the same code twice, a wrong code, or: $TOTPCTL --db $T/pam_totp.db list
  Ctrl-C stops the demo and removes the user, the sshd and $T.
  sshd's log follows (the module itself logs to syslog, facility authpriv):

EOF
tail -n 0 -f "$T/sshd.log" --pid "$sshd_pid" | grep --line-buffered -E 'Accepted|Failed|Invalid|PAM' |
    {
        hinted=false
        while IFS= read -r line; do
            printf '%s\n' "$line"
            if ! $hinted && [[ $line == *Accepted* ]]; then
                hinted=true
                echo "$TOTP_HINT"
            fi
        done
    } || true
