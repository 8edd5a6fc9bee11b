#!/usr/bin/env python3
"""Totals a Chrome trace from `contextdiff benchmark-worker ... --profile FILE` (libtorch's
operator profiler) per operator: self time (its own time, nested operators' time taken out),
total time and calls, largest self time first.

    python3 scripts/profile_summary.py FILE [ROWS]
"""
import collections
import json
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
    by_thread = collections.defaultdict(list)
    for e in spans:
        by_thread[e.get("tid")].append(e)
    self_time, total, calls = collections.Counter(), collections.Counter(), collections.Counter()
    for thread in by_thread.values():
        thread.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # (end, name, index into child time)
        child = []
        for e in thread:
            start, end = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][0] <= start:
                stack.pop()
            if stack:
                child[stack[-1][2]] += e["dur"]
            child.append(0.0)
            stack.append((end, e["name"], len(child) - 1))
            e["_child"] = len(child) - 1
        for e in thread:
            self_time[e["name"]] += e["dur"] - child[e["_child"]]
            total[e["name"]] += e["dur"]
            calls[e["name"]] += 1
    whole = sum(self_time.values())
    rows = int(sys.argv[2]) if len(sys.argv) == 3 else 25
    print(f"{'operator':40s} {'self ms':>10s} {'self %':>7s} {'total ms':>10s} {'calls':>8s}")
    for name, t in self_time.most_common(rows):
        print(f"{name[:40]:40s} {t / 1e3:10.1f} {100 * t / whole:6.1f}% {total[name] / 1e3:10.1f} {calls[name]:8d}")
    print(f"{'all operators':40s} {whole / 1e3:10.1f}")


if __name__ == "__main__":
    main()
