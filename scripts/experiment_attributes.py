#!/usr/bin/env python3
"""Per-attribute detail of a `contextdiff experiment t2i` folder: for each method, mean ± std over
seeds (final weights, both splits pooled) of the evaluator's per-attribute accuracy and of the
pixel check (single-object colour, two-object colour + position).

    python3 scripts/experiment_attributes.py EXPERIMENT_DIR
"""
import glob, json, os, statistics, sys

root = sys.argv[1]
attrs = ["color", "shape", "size", "count", "relation"]
print("| method | " + " | ".join(f"evaluator: {a} (%)" for a in attrs) + " | pixel: single-object colour (%) | pixel: two objects (%) | seeds |")
print("| --- |" + " --- |" * (len(attrs) + 3))
for method in ["baseline", "contextdiff"]:
    per_seed = []
    for path in sorted(glob.glob(os.path.join(root, "evals", f"{method}-seed*-final.json"))):
        sets = json.load(open(path))["sets"]
        row = {}
        for a in attrs:
            c = sum(s["alignment"]["attributes"].get(a, {}).get("correct", 0) for s in sets)
            t = sum(s["alignment"]["attributes"].get(a, {}).get("total", 0) for s in sets)
            row[a] = 100 * c / t if t else float("nan")
        kinds = [s["pixel"]["kinds"] for s in sets]
        single = [k["singleObject"] for k in kinds]
        pairs = [k[p] for k in kinds for p in ("horizontalPair", "verticalPair")]
        row["single"] = 100 * sum(x["correct"] for x in single) / sum(x["total"] for x in single)
        row["pairs"] = 100 * sum(x["correct"] for x in pairs) / sum(x["total"] for x in pairs)
        per_seed.append(row)
    def cell(k):
        v = [r[k] for r in per_seed]
        return f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0:.1f}"
    label = "baseline (r_φ ≡ 0)" if method == "baseline" else "ContextDiff"
    print(f"| {label} | " + " | ".join(cell(a) for a in attrs) + f" | {cell('single')} | {cell('pairs')} | {len(per_seed)} |")
