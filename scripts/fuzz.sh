#!/usr/bin/env bash
# Bounded fuzzing of every parser that reads outside input (module
# arguments, config files, rhosts, CIDR blocks, answers, import files):
# the property tests in tests/it/properties.rs with many more cases.
#   ./scripts/fuzz.sh [CASES]      (default 100000 per parser property)
# cargo-fuzz would need a nightly compiler; this machine has one stable
# toolchain, so proptest is the fuzzer here.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-100000}
answer_cases=$((cases / 500))
start=$(date +%s)
echo "==> ${cases} cases for each of the 6 parser properties"
PROPTEST_CASES=$cases cargo nextest run --release \
    -E 'test(/^properties::/) & not test(=properties::arbitrary_answers_never_get_in)'
echo "==> ${answer_cases} sequences of up to 15 arbitrary answers through the decision"
PROPTEST_CASES=$answer_cases cargo nextest run --release \
    -E 'test(=properties::arbitrary_answers_never_get_in)'
echo "==> $((cases * 6)) parser inputs and ${answer_cases} answer sequences, no crash, in $(( $(date +%s) - start )) s"
