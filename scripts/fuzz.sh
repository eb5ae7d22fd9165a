#!/usr/bin/env bash
# Bounded fuzzing of every parser that reads outside input (module
# arguments, config files, rhosts, CIDR blocks, answers, import files):
# the property tests in tests/properties.rs with many more cases.
#   ./scripts/fuzz.sh [CASES]      (default 100000 per property)
# cargo-fuzz would need a nightly compiler; this machine has one stable
# toolchain, so proptest is the fuzzer here.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-100000}
answer_cases=$((cases / 500))
echo "==> ${cases} cases per parser property, ${answer_cases} answer sequences (each up to 15 answers)"
start=$(date +%s)
PROPTEST_CASES=$cases PROPTEST_ANSWER_CASES=$answer_cases \
    cargo nextest run --release --test properties --no-fail-fast
echo "==> ran $((cases * 6)) parser inputs and ${answer_cases} answer sequences without a crash in $(( $(date +%s) - start )) s"
