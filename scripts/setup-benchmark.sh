#!/usr/bin/env bash
# Idempotent set-up of the peers of `contextdiff benchmark` (docs/PERFORMANCE.md):
# a virtual environment on Debian's python3 that sees the system torch (python3-torch 1.13) and
# adds diffusers 0.27.2 from PyPI. Debian's python3 is "externally managed" (PEP 668), so pip
# refuses to install into it without --break-system-packages; a venv with --system-site-packages
# avoids touching the system. Fast (no network) when everything is already there.
# The benchmark finds the venv by itself; override with CONTEXTDIFF_PYTHON or --python.
set -euo pipefail

VENV="${CONTEXTDIFF_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/contextdiff/bench-venv}"
SYSTEM_PYTHON=/usr/bin/python3
DIFFUSERS_VERSION=0.27.2

if ! "$SYSTEM_PYTHON" -c 'import torch' 2>/dev/null; then
  echo "setup-benchmark: $SYSTEM_PYTHON has no torch; run scripts/setup.sh first (installs python3-torch)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup-benchmark: creating $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
fi
if "$VENV/bin/python" -c "import diffusers, torch, sys; sys.exit(diffusers.__version__ != '$DIFFUSERS_VERSION')" 2>/dev/null; then
  echo "setup-benchmark: ok (diffusers $DIFFUSERS_VERSION in $VENV)" >&2
  exit 0
fi
echo "setup-benchmark: installing diffusers==$DIFFUSERS_VERSION into $VENV" >&2
# huggingface_hub < 0.26: newer versions dropped `cached_download`, which diffusers 0.27 imports.
"$VENV/bin/python" -m pip install --quiet "diffusers==$DIFFUSERS_VERSION" 'huggingface_hub<0.26'
"$VENV/bin/python" -c "import diffusers, torch; print('setup-benchmark: ok (diffusers', diffusers.__version__, '+ torch', torch.__version__, ')')" >&2
