#!/usr/bin/env bash
# Training throughput of one process with 2 threads vs 2 data-parallel ranks with 1 thread each
# (c10d Gloo on loopback), same global batch 32 and model (the shipped recipe). Prints the
# steps/s of the training phase as each progress bar reports it (data preparation excluded).
# Usage: bash scripts/measure_ddp.sh [steps]   (run on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-40}"
BIN="${CONTEXTDIFF_BIN:-.build/release/contextdiff}"
[ -x "$BIN" ] || swift build -c release --product contextdiff
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
COMMON=(--steps "$STEPS" --dataset-size 2000 --checkpoint-every 100000 --no-samples --no-resume)
rate() { grep -o "train $STEPS/$STEPS [0-9.]* it/s" "$1" | tail -1 | awk '{print $3}'; }
export OPENBLAS_NUM_THREADS=1
"$BIN" train -o "$WORK/one" "${COMMON[@]}" --threads 2 2> "$WORK/one.log"
"$BIN" launch --nproc 2 -- train -o "$WORK/two" "${COMMON[@]}" --threads 1 2> "$WORK/two.log"
one=$(rate "$WORK/one.log"); two=$(rate "$WORK/two.log")
echo "1 rank x 2 threads: $one steps/s ($(python3 -c "print(round($one*32,2))") images/s)"
echo "2 ranks x 1 thread: $two steps/s ($(python3 -c "print(round($two*32,2))") images/s)"
echo "ratio (2 ranks / 1 rank): $(python3 -c "print(round($two/$one,3))")"
