#!/usr/bin/env python3
"""A table of `contextdiff benchmark --json-output` reports side by side.

    python3 scripts/compare_benchmarks.py after-1=a1.json before-1=b1.json ...

Per report: the equivalence (max |Swift − twin| of the U-Net and r_φ), and per workload the
Swift and twin rates with their ratio (the figure that survives a noisy machine), and peak RSS.
Labels that share a prefix before the last '-' are averaged at the end ("after-1", "after-2").
"""
import json
import statistics
import sys
from collections import defaultdict


def main(arguments):
    print("| run | U-Net max \\|Δ\\| | r_φ max \\|Δ\\| | training: Swift / twin (images/s) | sampling: Swift / twin (images/s) "
          "| video edit: Swift / twin (frames/s) | peak RSS Swift / twin, training · sampling (MiB) |")
    print("|---|---|---|---|---|---|---|")
    groups = defaultdict(list)
    for argument in arguments:
        label, path = argument.split("=", 1)
        with open(path) as f:
            d = json.load(f)
        r, e, t, s = d["ratios"], d["equivalence"], d["training"], d["sampling"]
        edit = d["video_edit"]["sides"] if isinstance(d.get("video_edit"), dict) else {}

        def pair(sides, key, ratio, digits):
            if "swift" not in sides or "twin" not in sides:
                return "—"
            return f"{sides['swift'][key]:.{digits}f} / {sides['twin'][key]:.{digits}f} = **{r[ratio]:.3f}**"

        print(f"| {label} | {e['unet_max_abs_diff']:.2e} | {e['adapter_max_abs_diff']:.2e} "
              f"| {pair(t, 'images_per_s', 'train_swift_over_twin', 1)} | {pair(s, 'images_per_s', 'sample_swift_over_twin', 3)} "
              f"| {pair(edit, 'frames_per_s', 'edit_swift_over_twin', 3)} "
              f"| {t['swift']['peak_rss_mb']:.0f} / {t['twin']['peak_rss_mb']:.0f} · {s['swift']['peak_rss_mb']:.0f} / {s['twin']['peak_rss_mb']:.0f} |")
        groups[label.rsplit("-", 1)[0]].append(r)
    print()
    for name, rs in groups.items():
        means = [statistics.mean(x[k] for x in rs if x.get(k) is not None)
                 for k in ("train_swift_over_twin", "sample_swift_over_twin", "edit_swift_over_twin")]
        print(f"- {name} (mean of {len(rs)}): Swift / twin training {means[0]:.3f}, sampling {means[1]:.3f}, video edit {means[2]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
