#!/usr/bin/env python3
"""Mean ± sample standard deviation over seeds of `contextdiff evaluate --class-to-image --json`
reports. Usage: class_ablation.py NAME=report.json[,report.json...] ... (one NAME per method)."""
import json
import statistics
import sys

FIELDS = [
    ("class accuracy %", lambda r: 100 * r["class_accuracy"]),
    ("colour %", lambda r: 100 * r["colour_accuracy"]),
    ("shape %", lambda r: 100 * r["shape_accuracy"]),
    ("Fréchet", lambda r: r["frechet_distance"]),
    ("precision", lambda r: r["diversity"]["precision"]),
    ("recall", lambda r: r["diversity"]["recall"]),
    ("centre spread px", lambda r: r["diversity"]["spread"]["centre_spread"]),
    ("size CV", lambda r: r["diversity"]["spread"]["size_cv"]),
]


def cell(values):
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print("| method | seeds | " + " | ".join(name for name, _ in FIELDS) + " |")
    print("|---|---|" + "---|" * len(FIELDS))
    for arg in sys.argv[1:]:
        name, _, paths = arg.partition("=")
        reports = [json.load(open(p)) for p in paths.split(",")]
        print(f"| {name} | {len(reports)} | " + " | ".join(cell([f(r) for r in reports]) for _, f in FIELDS) + " |")
    real = json.load(open(sys.argv[1].partition("=")[2].split(",")[0]))["diversity"]["real_spread"]
    print(f"\nreal renders: centre spread {real['centre_spread']:.3f} px, size CV {real['size_cv']:.3f}")


if __name__ == "__main__":
    main()
