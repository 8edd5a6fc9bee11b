"""Times every GroupNorm, LayerNorm and GELU call of the twin's training step alone, forward and backward
(the shapes recorded with forward hooks on one batch of 32), at N threads:

    /usr/bin/python3 benchmarks/kernels/norm_timings.py DIR N     # DIR from `contextdiff benchmark --keep-files`
"""
import sys, torch, time, collections
sys.path.insert(0, __import__('os').path.join(__import__('os').path.dirname(__import__('os').path.abspath(__file__)), '..', 'peer'))
from contextdiff_torch import UNet, ContextAdapter
import bench_peer
D = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))
unet = bench_peer.load_model(UNet, D + '/unet'); adapter = bench_peer.load_model(ContextAdapter, D + '/adapter')
shapes = collections.Counter()
def hook(m, inp, out): shapes[(type(m).__name__, tuple(inp[0].shape), getattr(m, 'num_groups', 0))] += 1
for m in list(unet.modules()) + list(adapter.modules()):
    if isinstance(m, (torch.nn.GroupNorm, torch.nn.SiLU, torch.nn.LayerNorm, torch.nn.GELU)): m.register_forward_hook(hook)
B = 32
x = torch.randn(B, 3, 32, 32); t = torch.randint(0, 1000, (B,)); tok = torch.randn(B, 32, 384); mask = torch.ones(B, 32, dtype=torch.bool); pooled = torch.randn(B, 384)
with torch.no_grad(): unet(x, t, tok, mask, pooled); adapter(x, t, tok, mask)
tf = tb = 0
for (kind, s, g), n in sorted(shapes.items(), key=lambda kv: -kv[1]*torch.Size(kv[0][1]).numel()):
    if kind == 'GroupNorm': m = torch.nn.GroupNorm(g, s[1])
    elif kind == 'SiLU': m = torch.nn.SiLU()
    elif kind == 'LayerNorm': m = torch.nn.LayerNorm(s[-1])
    else: m = torch.nn.GELU()
    xi = torch.randn(*s, requires_grad=True)
    for _ in range(3): m(xi).backward(torch.ones(s))
    R = 20; fw = bw = 0
    gout = torch.randn(*s)
    for _ in range(R):
        t0 = time.perf_counter(); y = m(xi); t1 = time.perf_counter(); y.backward(gout); t2 = time.perf_counter()
        fw += t1 - t0; bw += t2 - t1
    fw /= R; bw /= R; tf += n * fw; tb += n * bw
    print(kind, s, 'x%d' % n, 'fw %.3f bw %.3f ms' % (fw * 1e3, bw * 1e3))
print('total fw %.1f bw %.1f ms' % (tf * 1e3, tb * 1e3))
