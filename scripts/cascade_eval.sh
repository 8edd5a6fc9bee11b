#!/usr/bin/env bash
# The cascade's measurements in docs/RESULTS.md (issue 22), written as JSON into OUT:
#   scripts/cascade_eval.sh OUT [BINARY] [SR_MODEL]
# 1. the super-resolution stage alone on real pairs (evaluate-sr): a sweep of the sampling noise
#    level on 32 pairs per split, then the default level on 64 pairs per split;
# 2. alignment of the base model alone vs the cascade (its images reduced back to 32×32 for the
#    evaluator), three seeds each, on the same base samples (same seeds);
# 3. the wall time of the README's main command (4 images through the cascade) and of the base alone.
# Steps skip when their JSON exists, so the script resumes after a kill.
set -euo pipefail
out=${1:?usage: cascade_eval.sh OUT [BINARY] [SR_MODEL]}
bin=${2:-.build/release/contextdiff}
sr=${3:-models/superres}
threads=${THREADS:-2}
mkdir -p "$out"
run() {  # FILE ARGS...: runs `contextdiff ARGS --json` into FILE unless it exists
    local file=$1
    shift
    [ -f "$file" ] && return 0
    "$bin" "$@" --json --threads "$threads" >"$file.tmp" 2>>"$out/log.txt" && mv "$file.tmp" "$file"
}
for level in 0 50 100 200 400; do
    run "$out/sr-level-$level.json" evaluate-sr --sr-model "$sr" --num-samples 32 --sr-noise-level "$level"
done
run "$out/sr-default.json" evaluate-sr --sr-model "$sr" --num-samples 64
for seed in 1234 1235 1236; do
    run "$out/base-s$seed.json" evaluate --num-samples 16 --seed "$seed" --evaluator-check-images 200
    run "$out/cascade-s$seed.json" evaluate --num-samples 16 --seed "$seed" --evaluator-check-images 200 --cascade --sr-model "$sr"
done
if [ ! -f "$out/timing.txt" ]; then
    {
        for stages in all base; do
            extra=()
            [ "$stages" = all ] && extra=(--sr-model "$sr")
            start=$(date +%s.%N)
            "$bin" generate "a red circle to the left of a blue square" --stages "$stages" "${extra[@]}" \
                -o "$out/generate-$stages" --threads 2 >/dev/null 2>&1
            end=$(date +%s.%N)
            echo "generate --stages $stages (4 images, 2 threads): $(python3 -c "print(round($end - $start, 1))") s"
        done
    } >"$out/timing.txt.tmp" && mv "$out/timing.txt.tmp" "$out/timing.txt"
fi
cat "$out/timing.txt"
