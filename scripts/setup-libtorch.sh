#!/usr/bin/env bash
# Idempotent: a libtorch 2.x to build against instead of Debian's 1.13, from PyPI's torch wheel.
#
#   bash scripts/setup-libtorch.sh [VERSION]      # default 2.11.0; prints the folder to use as
#   export CONTEXTDIFF_LIBTORCH=$(bash scripts/setup-libtorch.sh)   # CONTEXTDIFF_LIBTORCH
#   swift build --build-path .build-torch2 -c release
#
# Lays out `$CONTEXTDIFF_CACHE/torch-VERSION/` as pip would in site-packages: `torch/include`,
# `torch/lib` (libtorch_cpu, libc10, libgomp: what the CPU build links; libtorch_cuda is not
# kept, a CUDA machine brings its own) and `nvidia/cu13/lib` (libcudart and libcupti, which
# PyPI's libtorch_cpu needs to load even without a GPU; found through its $ORIGIN rpath).
set -euo pipefail

VERSION="${1:-2.11.0}"
CACHE="${CONTEXTDIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/contextdiff}"
DEST="$CACHE/torch-$VERSION"

if [ -f "$DEST/.complete" ]; then
  echo "$DEST/torch"
  exit 0
fi

command -v unzip >/dev/null || { echo "setup-libtorch: needs unzip (bash scripts/setup.sh installs it)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "setup-libtorch: downloading torch==$VERSION from PyPI (about 0.5 GB)" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/whl" "torch==$VERSION"
whl="$(find "$tmp/whl" -maxdepth 1 -name 'torch-*.whl' | head -n1)"
[ -n "$whl" ] || { echo "setup-libtorch: no torch wheel for this Python" >&2; exit 1; }

out="$DEST.partial"
rm -rf "$out"
mkdir -p "$out"
unzip -q "$whl" 'torch/include/*' 'torch/lib/libtorch_cpu.so' 'torch/lib/libc10.so' 'torch/lib/libgomp*' \
  'torch/version.py' -d "$out"

# The CUDA runtime libraries libtorch_cpu is linked against, pinned as the wheel pins them.
toolkit="$(unzip -p "$whl" "torch-$VERSION.dist-info/METADATA" | sed -n 's/^Requires-Dist: \(cuda-toolkit\[[^]]*\]==[0-9.]*\).*/\1/p' | head -n1)"
needed="$(readelf -d "$out/torch/lib/libtorch_cpu.so" | sed -n 's/.*NEEDED.*\[\(lib\(cudart\|cupti\)[^]]*\)\]/\1/p')"
if [ -n "$needed" ]; then
  version="${toolkit##*==}"
  [ -n "$version" ] || { echo "setup-libtorch: libtorch_cpu needs $needed but the wheel names no cuda-toolkit" >&2; exit 1; }
  echo "setup-libtorch: downloading the CUDA runtime libraries ($version) libtorch_cpu loads" >&2
  python3 -m pip download --quiet -d "$tmp/nv" "cuda-toolkit[cudart,cupti]==$version"
  for w in "$tmp"/nv/nvidia_cuda_runtime*.whl "$tmp"/nv/nvidia_cuda_cupti*.whl; do
    unzip -q -o "$w" -d "$tmp/nvx"
  done
  for lib in $needed; do
    found="$(find "$tmp/nvx" -name "$lib" | head -n1)"
    [ -n "$found" ] || { echo "setup-libtorch: $lib not in the CUDA runtime wheels" >&2; exit 1; }
    rel="${found#"$tmp/nvx/"}"
    mkdir -p "$out/$(dirname "$rel")"
    cp "$found" "$out/$rel"
  done
fi

rm -rf "$DEST"
mv "$out" "$DEST"
touch "$DEST/.complete"
echo "setup-libtorch: ok (torch $VERSION at $DEST/torch)" >&2
echo "$DEST/torch"
