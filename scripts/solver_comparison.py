#!/usr/bin/env python3
"""Tables (mean ± sample std over sampling seeds) from scripts/solver_comparison.sh's reports."""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def mean_std(values):
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def main(folder):
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(folder, "*-seed*.json"))):
        with open(path) as f:
            report = json.load(f)
        runs[(report["sampler"], report["steps"])].append(report)
    order = sorted(runs, key=lambda k: (k[0] != "dpmpp", -k[1] if k[0] == "ddim" else k[1]))
    print("| sampler | steps | seeds | split | alignment (correct / 192) | Fréchet distance | recall | seconds per evaluation |")
    print("|---|---|---|---|---|---|---|---|")
    for key in order:
        reports = runs[key]
        seconds = mean_std([r["seconds"] for r in reports])
        for split in ("seen", "heldout"):
            sets = [next(s for s in r["sets"] if s["name"] == split) for r in reports]
            correct = mean_std([s["alignment"]["correct"] for s in sets])
            fd = mean_std([s["frechet_distance"] for s in sets])
            recall = mean_std([s["diversity"]["recall"] for s in sets])
            seeds = ",".join(str(r["seed"]) for r in reports)
            print(f"| {key[0]} | {key[1]} | {seeds} | {split} | {correct[0]:.1f} ± {correct[1]:.1f} "
                  f"| {fd[0]:.3f} ± {fd[1]:.3f} | {recall[0]:.3f} ± {recall[1]:.3f} | {seconds[0]:.1f} ± {seconds[1]:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "experiments/solvers")
