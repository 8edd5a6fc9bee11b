#!/usr/bin/env python3
"""Totals oneDNN's own timing of every primitive it executed (`DNNL_VERBOSE=1`) per primitive
kind, implementation, direction and memory layouts, for the last STEPS of a run whose steps all
execute the same primitives (a training or sampling workload), per step, with the achieved
GFLOP/s of each convolution kind:

    DNNL_VERBOSE=1 OPENBLAS_NUM_THREADS=1 contextdiff benchmark-worker train DIR --shards 1 > verbose.log
    python3 scripts/onednn_verbose_summary.py verbose.log TOTAL_STEPS [LAST_STEPS] [ROWS]

TOTAL_STEPS: the steps the log holds (the workload's warm-up steps plus its timed ones), so that
the log can be cut into equal steps; LAST_STEPS (default: half of them) are averaged, leaving out
the first executions, which include first-touch page faults. Work outside oneDNN primitives
(libtorch's own kernels, `dnnl_sgemm` calls, OpenBLAS) is not in the log.
"""
import collections
import re
import sys


def main():
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    total = int(sys.argv[2])
    last = int(sys.argv[3]) if len(sys.argv) > 3 else max(1, total // 2)
    rows = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    execs = []
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.startswith(("onednn_verbose,exec", "dnnl_verbose,exec")):
                continue
            fields = line.strip().split(",")
            kind, impl, prop, mem, problem, ms = fields[3], fields[4], fields[5], fields[6], fields[9], float(fields[10])
            layouts = " ".join(m.split(":")[0] + ":" + m.split(":")[3] for m in mem.split(" ") if m.count(":") >= 3)
            execs.append(((kind, impl, prop, layouts), problem, ms))
    if not execs or len(execs) % total:
        sys.exit(f"{len(execs)} executions do not split into {total} equal steps")
    per_step = len(execs) // total
    kept = execs[(total - last) * per_step:]
    time, calls, flops = collections.Counter(), collections.Counter(), collections.Counter()
    for key, problem, ms in kept:
        time[key] += ms / last
        calls[key] += 1
        m = re.match(r"mb(\d+)_ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+).*?ow(\d+)kw(\d+)", problem)
        if key[0] == "convolution" and m:
            mb, ic, oc, oh, kh, ow, kw = map(int, m.groups())
            flops[key] += 2 * mb * ic * oc * oh * ow * kh * kw / last
    print(f"{sum(time.values()):.1f} ms of oneDNN primitives per step (mean of the last {last} of {total} steps)")
    print(f"{'ms/step':>8} {'calls':>6} {'GFLOP/s':>8}  primitive")
    for key, ms in time.most_common(rows):
        rate = f"{flops[key] / ms / 1e6:8.1f}" if flops[key] else " " * 8
        print(f"{ms:8.2f} {calls[key] // last:6d} {rate}  {' '.join(key)}")


if __name__ == "__main__":
    main()
