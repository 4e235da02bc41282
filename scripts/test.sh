#!/usr/bin/env bash
# Runs the whole test suite, then the suite-wide leak check (silent when the machine is clean),
# so the output ends with the test runner's summary.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh || exit 1
cargo build --workspace --all-targets --quiet || exit 1
if cargo nextest --version >/dev/null 2>&1; then
  run_tests() { cargo nextest run --no-fail-fast "$@"; }
else
  run_tests() { cargo test --no-fail-fast "$@"; }
fi
# First the runtime's own tests (and podman's use of it) against berth-runtime linked
# statically, as `make build` ships it (a copy: the next build links target/debug's again).
status=0
cargo rustc --quiet -p berth-cli --bin berth-runtime -- -C target-feature=+crt-static || exit 1
mkdir -p target/static && cp target/debug/berth-runtime target/static/berth-runtime
BERTH_RUNTIME_BIN=$PWD/target/static/berth-runtime run_tests -p berth-cli --test runtime --test podman || status=1
# The same runtime on cgroup v2 only, in a VM on Debian 12's kernel (tests/vm/run.sh).
RUNTIME=target/static/berth-runtime bash tests/vm/run.sh || status=1
# Then everything, with this build's binaries.
run_tests --workspace || status=1
cargo run --quiet -p berth-testkit --bin berth-leak-check || status=1
exit $status
