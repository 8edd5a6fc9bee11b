#!/usr/bin/env bash
# The text-to-image ablation at equal budget (issue 18): the shipped model's four-stage recipe
# (docs/TRAINING.md) trained as ContextDiff and as its r_φ ≡ 0 baseline (--baseline), three
# seeds each, then every final model evaluated as the shipped model is in docs/RESULTS.md.
#
#   scripts/t2i_ablation.sh ROOT [BINARY]      # e.g. /work/ablation .build/release/contextdiff
#
# Seed s trains its stages with seeds s, s+1, s+5, s+5 (s = 0 is the shipped model's chain).
# Every stage resumes from its checkpoints and a finished stage (RUN/finished exists) is
# skipped, so the script can be killed and started again at any point, in any later session.
# JOBS=2 runs two chains at a time (each on THREADS threads, default 1); a chain another
# invocation is running is skipped (a lock file per chain). Logs: ROOT/logs/.
# METHODS (default "contextdiff baseline") may add contextdiff-bf16: the ContextDiff chain
# trained in bf16 mixed precision (`--precision bf16`, issue 20's quality comparison).
# Afterwards: python3 scripts/t2i_ablation.py ROOT
set -euo pipefail
root=${1:?usage: t2i_ablation.sh ROOT [BINARY]}
bin=${2:-.build/release/contextdiff}
jobs=${JOBS:-1}
threads=${THREADS:-1}
seeds=${SEEDS:-"0 10 20"}
recipe=$(cd "$(dirname "$0")/.." && pwd)/docs/recipes/relations-v2.json
mkdir -p "$root/logs"
export OPENBLAS_NUM_THREADS=1

stage() {  # RUN LOG ARGS...: trains (or resumes) unless RUN/finished exists
    # (model/ alone does not say the stage finished: the trainer writes it at every checkpoint.)
    local run=$1 log=$2
    shift 2
    if [ -f "$run/finished" ]; then return 0; fi
    echo "$(date -u +%FT%TZ) start $run" >>"$log"
    "$bin" train -o "$run" "$@" --threads "$threads" >>"$log" 2>&1
    date -u +%FT%TZ >"$run/finished"
    echo "$(date -u +%FT%TZ) done $run" >>"$log"
}

chain() {  # METHOD SEED
    local method=$1 s=$2 dir="$root/$1-s$2" log="$root/logs/$1-s$2.log" flag=()
    [ "$method" = baseline ] && flag=(--baseline)
    [ "$method" = contextdiff-bf16 ] && flag=(--precision bf16)
    # One process per chain, even across several invocations of this script.
    exec {lock}>"$root/$method-s$s.lock"
    flock -n "$lock" || { echo "$method-s$s is running elsewhere; skipped" >&2; return 0; }
    stage "$dir/stage1" "$log" "${flag[@]}" --steps 2400 --dataset-size 20000 --checkpoint-every 300 --seed "$s"
    stage "$dir/stage2" "$log" "${flag[@]}" --config "$recipe" --init-from "$dir/stage1/model" \
        --positional-embedding --steps 2000 --seed $((s + 1)) --dataset-size 20000
    stage "$dir/stage3" "$log" "${flag[@]}" --config "$recipe" --init-from "$dir/stage2/model" \
        --positional-embedding --layout-prior --steps 2500 --seed $((s + 5)) --dataset-size 20000
    stage "$dir/stage4" "$log" "${flag[@]}" --config "$recipe" --init-from "$dir/stage3/model" \
        --positional-embedding --layout-prior --layout-mixture 8 --layout-fit-steps 3000 --steps 0 \
        --seed $((s + 5)) --dataset-size 20000
    local report="$root/$method-s$s.json"
    if [ ! -f "$report" ]; then
        "$bin" evaluate --model "$dir/stage4/model" --num-samples 32 --images-per-prompt 4 --layout sampled \
            --threads "$threads" --json >"$report.tmp" 2>>"$log" && mv "$report.tmp" "$report"
    fi
}

running=0
for s in $seeds; do
    for method in ${METHODS:-contextdiff baseline}; do
        chain "$method" "$s" &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
    done
done
wait
