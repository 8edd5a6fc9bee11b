#!/usr/bin/env bash
# The CUDA check, on a GPU machine, in one command (under 8 minutes on one H200):
#
#   bash scripts/gpu-check.sh OUTDIR          # with `.gpu/` from scripts/gpu-bundle.sh beside it
#
# 1. `contextdiff check-device --device cuda`: the networks, the three samplers and 10 training
#    steps on CUDA against the CPU on the same weights (relative difference ≤ 1e-4 per forward pass, ≤ 1e-3 after 10 sampler steps and for the losses);
# 2. `contextdiff benchmark --device cuda`: training and sampling images/s, Swift against its
#    PyTorch twin on the same GPU, both in full fp32 (TF32 off);
# 3. the shipped recipe's training time on the GPU, when the MiniLM files are there
#    ($CONTEXTDIFF_MINILM_DIR; they are 88 MB, more than one call can carry: see docs/GPU.md).
# Writes OUTDIR/{gpu.txt,check-device.json,check-device.log,benchmark.json,benchmark.log,train.log,summary.txt}.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu-check.sh OUTDIR}"
mkdir -p "$out"
python="${CONTEXTDIFF_PYTHON:-python3}"
bin="$PWD/.gpu/contextdiff"
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
  "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$bin.xz" "$bin.partial" &&
    chmod +x "$bin.partial" && mv "$bin.partial" "$bin"
fi
[ -x "$bin" ] || { echo "gpu-check: $bin missing: run scripts/gpu-bundle.sh where Swift is, and carry .gpu" >&2; exit 1; }
torchlib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  echo "gpu-check: $python has no torch" >&2; exit 1; }
export LD_LIBRARY_PATH="$torchlib:$PWD/.gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
threads="$(nproc)"
summary="$out/summary.txt"
{
  echo "commit $(cat .gpu/COMMIT 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads"
} > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt" > "$summary"
"$bin" doctor --threads "$threads" >> "$summary" 2>&1

status=0
echo "== check-device" | tee -a "$summary"
timeout 180 "$bin" check-device --device cuda --threads "$threads" --json-output "$out/check-device.json" \
  > "$out/check-device.log" 2>&1 || status=1
cat "$out/check-device.log" >> "$summary"

echo "== benchmark" | tee -a "$summary"
timeout 240 "$bin" benchmark --device cuda --threads "$threads" --rounds 2 --train-steps 20 --train-warmup 3 \
  --sample-repeats 2 --python "$python" --json-output "$out/benchmark.json" > "$out/benchmark.log" 2>&1 || status=1
tail -n 25 "$out/benchmark.log" >> "$summary"

echo "== shipped recipe on the GPU" | tee -a "$summary"
if [ -f "${CONTEXTDIFF_MINILM_DIR:-/nonexistent}/model.safetensors" ]; then
  run="$(mktemp -d)"
  start=$(date +%s.%N)
  timeout 150 "$bin" train -o "$run/run" --config docs/recipes/relations-v2.json --device cuda --threads "$threads" \
    --no-samples > "$out/train.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "exit $rc after $(echo "$end - $start" | bc) s (timeout 150 s: the log's last steps/s gives the whole recipe's time)" >> "$summary"
  tail -c 2000 "$out/train.log" | tr '\r' '\n' | tail -n 5 >> "$summary"
else
  echo "skipped: no MiniLM files (set CONTEXTDIFF_MINILM_DIR; docs/GPU.md)" >> "$summary"
fi
cat "$summary"
exit $status
