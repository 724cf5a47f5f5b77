#!/usr/bin/env bash
# Long fuzz run of src/identity: arbitrary bytes (lossy UTF-8) and messy strings through every
# key of both APIs (customer list and CAPI user_data), under four default countries, checking
# no panic, reasons from the fixed list, 64-lowercase-hex cells, and idempotence.
#
#   scripts/fuzz-identity.sh [CASES]     (default 1,000,000; ~1 µs–20 µs per case)
#
# It is a proptest target (#[ignore]d in normal runs); failures are shrunk and printed.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-1000000}"
start=$(date +%s)
PROPTEST_CASES="$CASES" cargo test --release --lib \
  identity::tests::properties::fuzz_every_key_of_both_apis_with_arbitrary_bytes \
  -- --ignored --nocapture
echo "fuzz-identity: $CASES cases, $(( $(date +%s) - start )) s wall (including build)"
