#!/usr/bin/env bash
# The paper's Table 2 analogue on synthetic benchmark videos: ContextDiff vs FateZero-like vs
# Tune-A-Video-like editing, same model, same tuning budget, several seeds; CLIP-text and
# CLIP-temporal with the project's contrastive image–text model, and structure preservation.
#
#   scripts/video_table2.sh MODEL_DIR CLIP_DIR OUT_DIR [SEEDS] [TUNE_STEPS]
#
# Each line of the edit list is "<synthetic index>|<source caption>|<target prompt>"; the source
# caption must be the benchmark's caption of that index (`contextdiff dataset video` prints it).
# Writes OUT_DIR/scores.jsonl (one line per edit) and prints mean ± std per method.
set -euo pipefail
MODEL=${1:?model folder}
CLIP=${2:?contrastive model folder}
OUT=${3:?output folder}
SEEDS=${4:-"0 1 2"}
TUNE=${5:-50}
BIN=${CONTEXTDIFF:-.build/debug/contextdiff}
THREADS=${THREADS:-1}
EDITS=(
  "1|an orange square|a blue circle"
  "1|an orange square|a green square"
)
mkdir -p "$OUT"
: > "$OUT/scores.jsonl"
for edit in "${EDITS[@]}"; do
  IFS='|' read -r index source target <<< "$edit"
  src="$OUT/src-$index"
  [ -f "$src.gif" ] || "$BIN" dataset video --index "$index" --size 32 -o "$src" > /dev/null
  for seed in $SEEDS; do
    for method in contextdiff fatezero tuneavideo; do
      stem="$OUT/$index-${target// /_}-$method-s$seed"
      "$BIN" edit-video --video "$src.gif" --source-prompt "$source" --target-prompt "$target" \
        --model "$MODEL" --method "$method" --tune-steps "$TUNE" --seed "$seed" --threads "$THREADS" \
        --output "$stem" > /dev/null
      scores=$("$BIN" evaluate-video --source "$src.gif" --edited "$stem.gif" --prompt "$target" \
        --clip "$CLIP" --threads "$THREADS" --json)
      echo "{\"index\": $index, \"target\": \"$target\", \"method\": \"$method\", \"seed\": $seed, \"scores\": $scores}" >> "$OUT/scores.jsonl"
      echo "$method seed $seed '$target': $scores" >&2
    done
  done
done
/usr/bin/python3 - "$OUT/scores.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| method | CLIP-text | CLIP-temporal | structure (mask IoU) | edits |")
print("| --- | --- | --- | --- | --- |")
for m in ["contextdiff", "fatezero", "tuneavideo"]:
    r = [x["scores"] for x in rows if x["method"] == m]
    if not r:
        continue
    def f(k, d):
        v = [x[k] for x in r]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.{d}f} ± {sd:.{d}f}"
    print(f"| {m} | {f('clip_text', 2)} | {f('clip_temporal', 4)} | {f('structure', 3)} | {len(r)} |")
PY
