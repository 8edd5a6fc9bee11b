#!/usr/bin/env bash
# Runs the test suite on a fresh machine: installs what the tests need, then `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift test "$@"
