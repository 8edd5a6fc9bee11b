#!/usr/bin/env python3
"""The text-to-image ablation's table (issue 18): mean ± sample standard deviation over seeds of
the `contextdiff evaluate --json` reports that scripts/t2i_ablation.sh writes as
ROOT/METHOD-sSEED.json (METHOD: contextdiff, baseline, contextdiff-bf16).

    python3 scripts/t2i_ablation.py ROOT [--plot FILE.svg]

--plot also draws the figure: one panel per headline metric and split, each method's seeds as
dots and their mean as a bar (plain SVG, no plotting library needed).
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


PLOTTED = ["all correct %", "colour attribution %", "Fréchet", "precision", "recall", "centre spread / real"]
COLOURS = {"baseline": "#999999", "contextdiff": "#1f77b4", "contextdiff-bf16": "#ff7f0e"}


def svg(values, path):
    """values[(metric, split)][method] = [per-seed values]."""
    methods = [m for m in ("baseline", "contextdiff", "contextdiff-bf16") if any(m in v for v in values.values())]
    pw, ph, top, left = 170, 150, 40, 40
    cols, rows = len(PLOTTED), 2
    width, height = left + cols * pw + 20, top + rows * (ph + 50) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="13">Text-to-image at equal budget: ContextDiff vs r_φ ≡ 0 (dots: seeds; bars: mean)</text>']
    for r, split in enumerate(("seen", "heldout")):
        for c, metric in enumerate(PLOTTED):
            cell = values.get((metric, split), {})
            allv = [v for m in methods for v in cell.get(m, [])]
            if not allv:
                continue
            hi = max(allv) * 1.1 if max(allv) > 0 else 1
            x0, y0 = left + c * pw, top + r * (ph + 50)
            out.append(f'<text x="{x0 + 5}" y="{y0 + 12}">{metric} ({split})</text>')
            out.append(f'<line x1="{x0 + 5}" y1="{y0 + ph}" x2="{x0 + pw - 15}" y2="{y0 + ph}" stroke="black"/>')
            out.append(f'<text x="{x0 + 5}" y="{y0 + 28}" fill="#555">0 – {hi:.3g}</text>')
            slot = (pw - 30) / max(1, len(methods))
            for k, m in enumerate(methods):
                vs = cell.get(m, [])
                if not vs:
                    continue
                cx = x0 + 15 + slot * (k + 0.5)
                mean = sum(vs) / len(vs)
                bh = (ph - 35) * mean / hi
                out.append(f'<rect x="{cx - slot * 0.3:.1f}" y="{y0 + ph - bh:.1f}" width="{slot * 0.6:.1f}" height="{bh:.1f}" fill="{COLOURS[m]}" fill-opacity="0.35"/>')
                for j, v in enumerate(vs):
                    out.append(f'<circle cx="{cx - 6 + 6 * (j % 3):.1f}" cy="{y0 + ph - (ph - 35) * v / hi:.1f}" r="3" fill="{COLOURS[m]}"/>')
                out.append(f'<text x="{cx:.1f}" y="{y0 + ph + 14}" text-anchor="middle">{mean:.3g}</text>')
    for k, m in enumerate(methods):
        out.append(f'<rect x="{left + k * 160}" y="{height - 20}" width="10" height="10" fill="{COLOURS[m]}"/>')
        out.append(f'<text x="{left + k * 160 + 14}" y="{height - 11}">{m}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    args = sys.argv[1:]
    plot = None
    if "--plot" in args:
        i = args.index("--plot")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        plot = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    root = args[0]
    reports = {}
    for path in sorted(glob.glob(os.path.join(root, "*-s*.json"))):
        match = re.fullmatch(r"(contextdiff-bf16|contextdiff|baseline)-s(\d+)\.json", os.path.basename(path))
        if match:
            reports.setdefault(match.group(1), {})[int(match.group(2))] = json.load(open(path))
    if not reports:
        sys.exit(f"no METHOD-sSEED.json reports in {root}")
    print("| method | split | seeds | " + " | ".join(name for name, _ in FIELDS) + " |")
    print("| --- | --- | --- |" + " ---: |" * len(FIELDS))
    values = {}
    for method in ("baseline", "contextdiff", "contextdiff-bf16"):
        runs = reports.get(method, {})
        if not runs:
            continue
        for split in ("seen", "heldout"):
            sets = [next(s for s in runs[k]["sets"] if s["name"] == split) for k in sorted(runs)]
            seeds = ",".join(str(k) for k in sorted(runs))
            print(f"| {method} | {split} | {seeds} | " + " | ".join(cell([f(s) for s in sets]) for _, f in FIELDS) + " |")
            for name, f in FIELDS:
                values.setdefault((name, split), {})[method] = [f(s) for s in sets]
    if plot:
        svg(values, plot)


if __name__ == "__main__":
    main()
