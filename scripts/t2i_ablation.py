#!/usr/bin/env python3
"""The text-to-image ablation's table (issue 18): mean ± sample standard deviation over seeds of
the `contextdiff evaluate --json` reports that scripts/t2i_ablation.sh writes as
ROOT/METHOD-sSEED.json (METHOD: contextdiff, baseline, contextdiff-bf16).

    python3 scripts/t2i_ablation.py ROOT
"""
import glob
import json
import os
import re
import statistics
import sys


def pct(part):
    return 100 * part["correct"] / part["total"] if part and part.get("total") else float("nan")


FIELDS = [
    ("all correct %", lambda s: 100 * s["alignment"]["correct"] / s["alignment"]["images"]),
    ("single obj. (colors) %", lambda s: pct(s["alignment"]["categories"].get("colors"))),
    ("position %", lambda s: pct(s["alignment"]["categories"].get("position"))),
    ("colour attribution %", lambda s: pct(s["alignment"]["categories"].get("color_attr"))),
    ("Fréchet", lambda s: s["frechet_distance"]),
    ("precision", lambda s: s["diversity"]["precision"]),
    ("recall", lambda s: s["diversity"]["recall"]),
    ("centre spread / real", lambda s: s["diversity"]["spread"]["centre_spread"] / s["diversity"]["real_spread"]["centre_spread"]),
    ("size CV / real", lambda s: s["diversity"]["spread"]["size_cv"] / s["diversity"]["real_spread"]["size_cv"]),
    ("CLIP-style", lambda s: s["clip_score"]),
]


def cell(values):
    mean = statistics.mean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    reports = {}
    for path in sorted(glob.glob(os.path.join(root, "*-s*.json"))):
        match = re.fullmatch(r"(contextdiff-bf16|contextdiff|baseline)-s(\d+)\.json", os.path.basename(path))
        if match:
            reports.setdefault(match.group(1), {})[int(match.group(2))] = json.load(open(path))
    if not reports:
        sys.exit(f"no METHOD-sSEED.json reports in {root}")
    print("| method | split | seeds | " + " | ".join(name for name, _ in FIELDS) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(FIELDS))
    for method in ("baseline", "contextdiff", "contextdiff-bf16"):
        runs = reports.get(method, {})
        if not runs:
            continue
        for split in ("seen", "heldout"):
            sets = [next(s for s in r["sets"] if s["name"] == split) for r in runs.values()]
            seeds = ",".join(str(k) for k in sorted(runs))
            print(f"| {method} | {split} | {seeds} | " + " | ".join(cell([f(s) for s in sets]) for _, f in FIELDS) + " |")


if __name__ == "__main__":
    main()
