#!/bin/bash
# DPM-Solver++ vs DDIM on the shipped model (docs/RESULTS.md, "Samplers"): every configuration
# evaluated with 3 sampling seeds; finished reports are skipped, so a killed run continues.
#   bash scripts/solver_comparison.sh [OUTPUT_DIR] [CONTEXTDIFF_BINARY]
# then: python3 scripts/solver_comparison.py OUTPUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-experiments/solvers}
bin=${2:-.build/release/contextdiff}
mkdir -p "$out"
for seed in 1234 1 2; do
  for cfg in "dpmpp 15" "dpmpp 20" "ddim 50" "ddim 15"; do
    set -- $cfg
    report=$out/$1-$2-seed$seed.json
    [ -s "$report" ] && continue
    /usr/bin/time -f "$1 $2 seed $seed: %e s" "$bin" evaluate --model models/default --sampler "$1" --steps "$2" \
      --seed "$seed" --num-samples 64 --threads 1 --json > "$report.tmp" 2>> "$out/log"
    mv "$report.tmp" "$report"
  done
done
echo done >> "$out/log"
