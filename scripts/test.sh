#!/usr/bin/env bash
# The whole test suite: unit tests, the test server's tests, and the FUSE integration
# tests (they mount for real, so they need /dev/fuse, fusermount3 and root; one test
# mounts s3fs beside s3syncfs). Ends with one summary line over every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null 2>&1 || ! command -v s3fs >/dev/null 2>&1; then
  echo "installing fuse3 and s3fs (needs root)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq fuse3 s3fs >/dev/null
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests -- --test-threads=4 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "summary: $passed passed, $failed failed"
exit "$status"
