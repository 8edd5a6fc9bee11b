#!/usr/bin/env bash
# The main job on a fresh machine: set up, build in release, run the command given
# (default: `doctor`, which checks libtorch, BLAS speed and the text encoder's files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product contextdiff >&2
if [ "$#" -eq 0 ]; then set -- doctor; fi
exec .build/release/contextdiff "$@"
