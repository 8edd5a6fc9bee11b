#!/usr/bin/env bash
# Builds what a GPU machine without a Swift toolchain needs to run `scripts/gpu-check.sh`:
# `.gpu/contextdiff.xz` (release, static Swift runtime, against PyPI's torch 2.x headers, linked
# to libtorch_cpu and libc10 only) and `.gpu/lib/` (the few system libraries it loads that a
# CUDA image may lack). libtorch itself comes from the GPU machine's own torch at run time.
#
#   bash scripts/gpu-bundle.sh        # then carry `.gpu` to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export CONTEXTDIFF_LIBTORCH="$(bash scripts/setup-libtorch.sh)"
swift build -c release --build-path .build-torch2 --static-swift-stdlib --product contextdiff >&2
rm -rf .gpu.partial
mkdir -p .gpu.partial/lib
cp .build-torch2/release/contextdiff .gpu.partial/contextdiff
strip .gpu.partial/contextdiff
# About 80 MB stripped (static Foundation with its ICU data): xz brings it under what one call
# may carry (64 MiB with the repository); gpu-check.sh unpacks it.
xz -9 -T0 .gpu.partial/contextdiff
# The binary's own needs other than libc, libstdc++ and libtorch (which the GPU machine's torch brings).
ldd .build-torch2/release/contextdiff | awk '/=> \// {print $1" "$3}' | while read -r name path; do
  case "$name" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    libtorch*|libc10*|libgomp*|libcudart*|libcupti*) ;;
    *) cp -L "$path" .gpu.partial/lib/ ;;
  esac
done
git rev-parse HEAD > .gpu.partial/COMMIT
rm -rf .gpu
mv .gpu.partial .gpu
du -sh .gpu .gpu/lib >&2
ls .gpu/lib >&2
