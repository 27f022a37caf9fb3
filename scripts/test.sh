#!/usr/bin/env bash
# The whole test suite: unit tests, the test server's tests, and the FUSE integration
# tests (they mount for real, so they need /dev/fuse, fusermount3 and root).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace -- --test-threads=4
