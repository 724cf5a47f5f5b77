#!/usr/bin/env bash
# Throughput of the Meta sandbox (release build): 10,000-row x 4-key add calls per second.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release -p meta-sandbox --test sandbox_bench -- --ignored --nocapture "$@"
