#!/usr/bin/env bash
# The paper's Table 2 analogue on synthetic benchmark videos: ContextDiff vs FateZero-like vs
# Tune-A-Video-like editing, same tuning budget, several seeds. ContextDiff edits with a model
# trained with the adapter; the two baselines edit with a model trained without it (r_φ ≡ 0) for
# the same steps, as each method would be used. Scores: CLIP-text by the contrastive model and by
# the attribute evaluator (fraction of frames read fully right), CLIP-temporal, and structure
# preservation (foreground-mask IoU with the source, frame by frame).
#
#   scripts/video_table2.sh CONTEXTDIFF_MODEL BASELINE_MODEL OUT_DIR [SEEDS] [TUNE_STEPS]
#
# Environment: CONTEXTDIFF (binary, default .build/release/contextdiff), THREADS (default 1),
# CLIP and EVALUATOR (model folders, default models/clip and models/evaluator).
# Each edit is "<synthetic index>|<kind>|<source caption>|<target prompt>"; the source caption is
# the benchmark's caption of that index (`contextdiff dataset video --index N` prints it).
# Writes OUT_DIR/scores.jsonl (one line per edit, method and seed; a rerun skips lines already
# there) and prints mean ± std per method, overall and per kind.
set -euo pipefail
CD_MODEL=${1:?ContextDiff model folder}
BASE_MODEL=${2:?baseline model folder}
OUT=${3:?output folder}
SEEDS=${4:-"0 1 2"}
TUNE=${5:-50}
BIN=${CONTEXTDIFF:-.build/release/contextdiff}
THREADS=${THREADS:-1}
CLIP=${CLIP:-models/clip}
EVALUATOR=${EVALUATOR:-models/evaluator}
EDITS=(
  "1|colour|an orange square|a blue square"
  "16|colour|a purple square on a white background|a red square on a white background"
  "25|colour|a green triangle|a yellow triangle"
  "6|colour|a green diamond below a blue diamond|a red diamond below a blue diamond"
  "11|object|a yellow square|a yellow circle"
  "13|object|a yellow triangle on a white background|a yellow square on a white background"
  "22|object|a photo of a blue diamond|a photo of a blue triangle"
  "21|object|a blue triangle above an orange square|a blue circle above an orange square"
  "12|size|a small red square|a large red square"
  "23|size|a large blue circle|a small blue circle"
  "15|object+colour|a photo of a green square|a photo of a purple circle"
  "29|object+colour|a yellow circle below a green square on a white background|a yellow circle below a red triangle on a white background"
)
mkdir -p "$OUT"
touch "$OUT/scores.jsonl"
for edit in "${EDITS[@]}"; do
  IFS='|' read -r index kind source target <<< "$edit"
  src="$OUT/src-$index"
  if [ ! -f "$src.gif" ]; then
    caption=$("$BIN" dataset video --index "$index" --size 32 -o "$src" 2>&1 >/dev/null | sed -n 's/^caption: //p')
    [ "$caption" = "$source" ] || { echo "video $index is '$caption', not '$source'" >&2; exit 1; }
  fi
  for seed in $SEEDS; do
    for method in contextdiff fatezero tuneavideo; do
      key="\"index\": $index, \"target\": \"$target\", \"method\": \"$method\", \"seed\": $seed,"
      grep -qF "$key" "$OUT/scores.jsonl" && continue
      model=$BASE_MODEL
      [ "$method" = contextdiff ] && model=$CD_MODEL
      stem="$OUT/$index-${target// /_}-$method-s$seed"
      start=$(date +%s)
      "$BIN" edit-video --video "$src.gif" --source-prompt "$source" --target-prompt "$target" \
        --model "$model" --method "$method" --tune-steps "$TUNE" --seed "$seed" --threads "$THREADS" \
        --output "$stem" > /dev/null 2> "$stem.log"
      scores=$("$BIN" evaluate-video --source "$src.gif" --edited "$stem.gif" --prompt "$target" \
        --clip "$CLIP" --evaluator "$EVALUATOR" --threads "$THREADS" --json)
      echo "{$key \"kind\": \"$kind\", \"seconds\": $(( $(date +%s) - start )), \"scores\": $scores}" >> "$OUT/scores.jsonl"
      echo "$method seed $seed '$target': $scores" >&2
    done
  done
done
/usr/bin/python3 - "$OUT/scores.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def cell(values, digits, scale=1.0):
    v = [scale * x for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.{digits}f} ± {sd:.{digits}f}"
print("| method | CLIP-text (contrastive) | CLIP-text (evaluator, % frames right) | CLIP-temporal | structure (mask IoU) | edits |")
print("| --- | --- | --- | --- | --- | --- |")
for m in ["contextdiff", "fatezero", "tuneavideo"]:
    r = [x["scores"] for x in rows if x["method"] == m]
    if r:
        print(f"| {m} | {cell([x['clip_text'] for x in r], 2)} | {cell([x['evaluator_text'] for x in r], 1, 100)} | "
              f"{cell([x['clip_temporal'] for x in r], 4)} | {cell([x['structure'] for x in r], 3)} | {len(r)} |")
print()
print("Evaluator alignment (% frames right) by kind of edit:")
print()
kinds = sorted({x["kind"] for x in rows})
print("| method | " + " | ".join(kinds) + " |")
print("| --- |" + " --- |" * len(kinds))
for m in ["contextdiff", "fatezero", "tuneavideo"]:
    cells = []
    for k in kinds:
        v = [x["scores"]["evaluator_text"] for x in rows if x["method"] == m and x["kind"] == k]
        cells.append(cell(v, 1, 100) if v else "–")
    print(f"| {m} | " + " | ".join(cells) + " |")
print()
print("Paired: ContextDiff minus each baseline on the same edit and seed (mean ± standard error; wins / ties / losses):")
print()
metrics = [("clip_text", "CLIP-text (contrastive)", 1.0, 2), ("evaluator_text", "CLIP-text (evaluator, points)", 100.0, 1),
           ("clip_temporal", "CLIP-temporal", 1.0, 4), ("structure", "structure", 1.0, 3)]
print("| vs | " + " | ".join(m[1] for m in metrics) + " |")
print("| --- |" + " --- |" * len(metrics))
key = lambda x: (x["index"], x["target"], x["seed"])
ours = {key(x): x["scores"] for x in rows if x["method"] == "contextdiff"}
for base in ["fatezero", "tuneavideo"]:
    theirs = {key(x): x["scores"] for x in rows if x["method"] == base}
    common = sorted(set(ours) & set(theirs))
    cells = []
    for name, _, scale, digits in metrics:
        d = [scale * (ours[k][name] - theirs[k][name]) for k in common]
        if not d:
            cells.append("–")
            continue
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else 0.0
        eps = 1e-9
        wins, losses = sum(x > eps for x in d), sum(x < -eps for x in d)
        cells.append(f"{statistics.mean(d):+.{digits}f} ± {se:.{digits}f} ({wins} / {len(d) - wins - losses} / {losses})")
    print(f"| {base} | " + " | ".join(cells) + " |")
PY
