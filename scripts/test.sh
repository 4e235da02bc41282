#!/usr/bin/env bash
# Runs the whole test suite, then the suite-wide leak check (silent when the machine is clean),
# so the output ends with the test runner's summary.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
cargo build --workspace --all-targets --quiet || exit 1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
status=$?
cargo run --quiet -p berth-testkit --bin berth-leak-check || status=1
exit $status
