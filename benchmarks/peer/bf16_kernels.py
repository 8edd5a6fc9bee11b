"""Where bfloat16 helps and hurts on this CPU, kernel by kernel, through the system's libtorch
(docs/PERFORMANCE.md "bf16 mixed precision"). Times one kernel at a time on U-Net-sized
activations ([32, 64, 32, 32]) and prints milliseconds per call (best of 20).

    /usr/bin/python3 benchmarks/peer/bf16_kernels.py [THREADS]
"""
import sys
import time

import torch
import torch.nn.functional as F


def best(f, n=20):
    f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def main():
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, 32, 32, generator=g)
    xb = x.bfloat16()
    w3 = torch.randn(64, 64, 3, 3, generator=g)
    gw, gb = torch.ones(64), torch.zeros(64)
    rows = [
        ("conv 3x3, float32", lambda: F.conv2d(x, w3, padding=1)),
        ("conv 3x3, bfloat16", lambda: F.conv2d(xb, w3.bfloat16(), padding=1)),
        ("GroupNorm(32), float32", lambda: F.group_norm(x, 32, gw, gb)),
        ("GroupNorm(32), bfloat16", lambda: F.group_norm(xb, 32, gw.bfloat16(), gb.bfloat16())),
        ("SiLU, float32", lambda: F.silu(x)),
        ("SiLU, bfloat16", lambda: F.silu(xb)),
        ("float32 -> bfloat16 (libtorch .to)", lambda: x.to(torch.bfloat16)),
        ("bfloat16 -> float32 (libtorch .to)", lambda: xb.to(torch.float32)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), tensors {tuple(x.shape)}")
    for name, f in rows:
        print(f"  {name:38s} {best(f):8.3f} ms")


if __name__ == "__main__":
    main()
