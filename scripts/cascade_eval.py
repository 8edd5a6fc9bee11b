#!/usr/bin/env python3
"""Tables of scripts/cascade_eval.sh's JSON (docs/RESULTS.md, the cascade section).

    python3 scripts/cascade_eval.py docs/results/cascade
"""
import json
import os
import statistics
import sys

root = sys.argv[1]


def load(name):
    path = os.path.join(root, name)
    return json.load(open(path)) if os.path.exists(path) else None


def method(split, name):
    return next(m for m in split["methods"] if m["name"] == name)


print("| noise level | split | pairs | nearest PSNR / SSIM | bicubic PSNR / SSIM | stage PSNR / SSIM | stage − bicubic PSNR (paired) | evaluator: low / stage reduced |")
print("|---|---|---|---|---|---|---|---|")
for name in ["sr-level-0.json", "sr-level-50.json", "sr-level-100.json", "sr-level-200.json", "sr-level-400.json", "sr-default.json"]:
    r = load(name)
    if r is None:
        continue
    label = f"{r['noise_level']}" + (" (default, 64 pairs)" if name == "sr-default.json" else "")
    for s in r["splits"]:
        cells = []
        for m in ["nearest", "bicubic", "stage"]:
            x = method(s, m)
            same = x.get("identical", 0)
            note = f" ({same} identical, as 100 dB)" if same else ""
            cells.append(f"{x['psnr']['mean']:.2f} ± {x['psnr']['std']:.2f} dB{note} / {x['ssim']['mean']:.4f}")
        g = s["psnr_gain_over_bicubic"]
        print(f"| {label} | {s['split']} | {s['pairs']} | " + " | ".join(cells)
              + f" | {g['mean']:+.2f} ± {g['std']:.2f} dB | {100 * s['alignment_low_resolution']:.1f} % / {100 * s['alignment_upsampled_reduced']:.1f} % |")

print()
print("| seed | set | base: all correct | cascade: all correct | base CLIP-style | cascade CLIP-style | base Fréchet | cascade Fréchet |")
print("|---|---|---|---|---|---|---|---|")
per = {}
for seed in ["1234", "1235", "1236"]:
    b, c = load(f"base-s{seed}.json"), load(f"cascade-s{seed}.json")
    if b is None or c is None:
        continue
    for sb, sc in zip(b["sets"], c["sets"]):
        ab = sb["alignment"]["correct"] / sb["alignment"]["images"]
        ac = sc["alignment"]["correct"] / sc["alignment"]["images"]
        per.setdefault(sb["name"], []).append((ab, ac))
        print(f"| {seed} | {sb['name']} | {100 * ab:.1f} % | {100 * ac:.1f} % | {sb['clip_score']:.2f} | {sc['clip_score']:.2f} | "
              f"{sb['frechet_distance']:.3f} | {sc['frechet_distance']:.3f} |")
for name, pairs in per.items():
    base = [p[0] for p in pairs]
    cascade = [p[1] for p in pairs]
    diff = [p[1] - p[0] for p in pairs]
    sd = statistics.stdev if len(pairs) > 1 else (lambda _: 0.0)
    print(f"\n{name}: base {100 * statistics.mean(base):.1f} ± {100 * sd(base):.1f} %, cascade {100 * statistics.mean(cascade):.1f} ± {100 * sd(cascade):.1f} %, "
          f"cascade − base {100 * statistics.mean(diff):+.1f} ± {100 * sd(diff):.1f} points (n = {len(pairs)} seeds)")
