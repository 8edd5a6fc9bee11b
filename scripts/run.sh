#!/usr/bin/env bash
# The main job on a fresh machine: set up, build in release, then run `contextdiff` with the
# arguments given — by default, generate images for a prompt with the shipped model
# (models/default) into ./outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product contextdiff >&2
if [ "$#" -eq 0 ]; then
  set -- generate "a red circle to the left of a blue square" --output outputs
fi
exec .build/release/contextdiff "$@"
