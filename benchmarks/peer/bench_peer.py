"""The Python side of `contextdiff benchmark` (DESIGN §8, docs/PERFORMANCE.md).

Usage: python3 bench_peer.py COMMAND DIR [--impl twin|diffusers]

DIR is written by the Swift side: `bench.json` (settings), `unet/` and `adapter/` model folders
(config.json + model.safetensors), `data.safetensors` (training images, caption table, schedule)
and, for `check`, `check_inputs.safetensors` + `swift_outputs.safetensors`.

Commands (each prints one JSON object on its last stdout line; run each in a fresh process so
that its peak RSS is its own):
  check     loads the Swift weights into the PyTorch twin (strict) and compares U-Net and adapter
            outputs on the same inputs (max abs difference).
  train     times the training step of the real trainer's loss (Trainer.trainStep: condition
            dropout, Eq. 3 with r_phi inside, x0 loss, backward, clip, AdamW, EMA).
  sample    times DDIM-50 with classifier-free guidance (one batched call for both branches) and,
            for the twin, the adapter at both levels of each step in one call (paper Eq. 13).
  flops     forward FLOPs of the networks from torch.profiler(with_flops=True), matrix-product
            ops only (conv2d, mm, addmm, bmm, baddbmm), per image.
  profile   torch.autograd.profiler tables of the twin's training step and sampling U-Net call.
`--impl diffusers` runs diffusers' UNet2DConditionModel of the same widths instead of the twin
(no adapter: plain diffusion, same loss and optimizer). Runs on Debian's python3-torch 1.13.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contextdiff_torch import ContextAdapter, UNet, load_safetensors, save_safetensors  # noqa: E402


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def load_model(cls, folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = cls(cfg)
    model.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")), strict=True)
    return model


def diffusers_unet(unet_cfg, layers_per_block=None):
    """diffusers' UNet2DConditionModel with the twin's widths, depth and attention levels
    (`layers_per_block` overrides the depth: 2 is diffusers' default, 3.0M parameters here)."""
    try:
        from diffusers import UNet2DConditionModel
    except ImportError as e:
        raise SystemExit(json.dumps({"error": f"diffusers is not installed ({e}); run scripts/setup-benchmark.sh"}))
    base, mults = unet_cfg["base_channels"], unet_cfg["channel_multipliers"]
    widths = tuple(base * m for m in mults)
    res, down, up = unet_cfg["sample_size"], [], []
    for _ in mults:
        attn = res in unet_cfg["cross_attention_resolutions"]
        down.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
        res //= 2
    up = [b.replace("Down", "Up") for b in reversed(down)]
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=unet_cfg["sample_size"], in_channels=unet_cfg["in_channels"], out_channels=unet_cfg["out_channels"],
        block_out_channels=widths, layers_per_block=layers_per_block or unet_cfg["layers_per_block"],
        down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=unet_cfg["norm_groups"],
        cross_attention_dim=unet_cfg["context_dim"], attention_head_dim=unet_cfg["heads"],
        class_embed_type="projection", projection_class_embeddings_input_dim=unet_cfg["pooled_dim"])


class Setup:
    def __init__(self, d, impl):
        with open(os.path.join(d, "bench.json")) as f:
            self.spec = json.load(f)
        torch.set_num_threads(self.spec["threads"])
        self.dir, self.impl = d, impl
        self.data = load_safetensors(os.path.join(d, "data.safetensors"))
        with open(os.path.join(d, "unet", "config.json")) as f:
            self.unet_cfg = json.load(f)
        if impl == "twin":
            self.unet = load_model(UNet, os.path.join(d, "unet"))
            self.adapter = load_model(ContextAdapter, os.path.join(d, "adapter"))
        else:
            self.unet = diffusers_unet(self.unet_cfg, self.spec.get("diffusers_layers_per_block"))
            self.adapter = None
        self.ac = self.data["alphas_cumprod"].double()
        self.T = self.ac.numel()

    def k(self, t):
        """k_t = sqrt(ab)(1 - sqrt(ab)), 0 at the clean level and at T - 1."""
        if t < 0 or t == self.T - 1:
            return 0.0
        s = math.sqrt(float(self.data["alphas_cumprod"][t]))
        return s * (1 - s)

    def denoise(self, x, t, tokens, mask, pooled):
        if self.impl == "twin":
            return self.unet(x, t, tokens, mask, pooled)
        return self.unet(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled).sample

    def parameters(self):
        return list(self.unet.parameters()) + (list(self.adapter.parameters()) if self.adapter is not None else [])


# ----------------------------------------------------------------------------- check
def check(s):
    inputs = load_safetensors(os.path.join(s.dir, "check_inputs.safetensors"))
    swift = load_safetensors(os.path.join(s.dir, "swift_outputs.safetensors"))
    mask = inputs["mask"].bool()
    with torch.inference_mode():
        u = s.unet.eval()(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, inputs["pooled"])
        a = s.adapter.eval()(inputs["x"], inputs["timesteps"], inputs["tokens"], mask)
    return {"unet_max_abs_diff": (u - swift["unet"]).abs().max().item(), "unet_scale": u.abs().max().item(),
            "adapter_max_abs_diff": (a - swift["adapter"]).abs().max().item(), "adapter_scale": a.abs().max().item()}


# ----------------------------------------------------------------------------- training
def train(s):
    """Trainer.trainStep, step for step (same random draws from the same seeds)."""
    c = s.spec["train"]
    B = c["batch"]
    pixels, image_rows = s.data["pixels"], s.data["image_rows"]
    table = (s.data["table_tokens"], s.data["table_mask"].bool(), s.data["table_pooled"])
    null_row = table[0].shape[0] - 1
    params = s.parameters()
    s.unet.train()
    if s.adapter is not None:
        s.adapter.train()
    opt = torch.optim.AdamW(params, lr=c["learning_rate"], weight_decay=c["weight_decay"])
    with torch.no_grad():
        shadow = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(c["seed"] + 0x5EED)
    count = pixels.shape[0]

    def lr_at(step):
        if step < c["warmup_steps"]:
            return c["learning_rate"] * (step + 1) / c["warmup_steps"]
        span = max(1, c["total_steps"] - c["warmup_steps"])
        progress = min(1.0, (step - c["warmup_steps"]) / span)
        return c["min_learning_rate"] + (c["learning_rate"] - c["min_learning_rate"]) * 0.5 * (1 + math.cos(math.pi * progress))

    def indices(step):
        per_epoch = max(1, count // B)
        epoch, offset = step // per_epoch, (step % per_epoch) * B
        seed = (c["seed"] + epoch * 0x9E3779B9) % (1 << 64)
        perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[offset:min(count, offset + B)]
        return perm

    def rows(r):
        return table[0][r], table[1][r], table[2][r]

    def step(i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i)
        idx = indices(i)
        x0 = pixels[idx]
        keep = torch.rand(B, generator=g)
        t = torch.randint(0, s.T, (B,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        r_true = image_rows[idx]
        r_den = torch.where(keep < c["condition_dropout"], torch.full_like(r_true, null_row), r_true)
        tok, mask, pooled = rows(r_den)
        a = s.ac[t]
        shape = (B, 1, 1, 1)
        xt = x0 * a.sqrt().float().reshape(shape) + noise * (1 - a).sqrt().float().reshape(shape)
        if s.adapter is not None:
            ttok, tmask, _ = rows(r_true)
            r = s.adapter(x0, t, ttok, tmask)
            xt = xt + r * torch.tensor([s.k(int(v)) for v in t], dtype=torch.float64).float().reshape(shape)
        out = s.denoise(xt, t, tok, mask, pooled)
        loss = (out - x0).square().mean(dim=(1, 2, 3)).mean()
        value = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c["gradient_clip"])
        opt.step()
        sstep = max(0, i)  # ExponentialMovingAverage: decay(step) with s = step - 1, step = i + 1
        d = 0.0 if sstep <= 0 else min((1 + sstep) / (10 + sstep), c["ema_decay"])
        with torch.no_grad():
            for sh, p in zip(shadow, params):
                sh.lerp_(p.detach(), 1 - d)
        return value

    losses, times = [], []
    for i in range(c["warmup"] + c["steps"]):
        t0 = time.perf_counter()
        losses.append(step(i))
        if i >= c["warmup"]:
            times.append(time.perf_counter() - t0)
    return {"images_per_s": B * len(times) / sum(times), "step_seconds": times, "losses": losses,
            "parameters": sum(p.numel() for p in params)}


# ----------------------------------------------------------------------------- sampling
def sample(s):
    c = s.spec["sample"]
    B, w, n = c["batch"], c["guidance"], c["steps"]
    tok, mask, pooled = (s.data["table_tokens"], s.data["table_mask"].bool(), s.data["table_pooled"])
    rows = s.data["sample_rows"]
    null = tok.shape[0] - 1
    cond = (tok[rows], mask[rows], pooled[rows])
    unc = tuple(v[null].unsqueeze(0).expand(B, *v.shape[1:]).contiguous() for v in (tok, mask, pooled))
    both = tuple(torch.cat([u, cc]) for u, cc in zip(unc, cond))
    cond2 = tuple(torch.cat([v, v]) for v in cond)
    ratio = s.T // n
    timesteps = [i * ratio for i in range(n)][::-1]
    s.unet.eval()
    if s.adapter is not None:
        s.adapter.eval()
    if s.impl == "diffusers":
        from diffusers import DDIMScheduler
        sched = DDIMScheduler(num_train_timesteps=s.T, beta_schedule="linear", prediction_type="sample",
                              clip_sample=True, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
        sched.set_timesteps(n)
        assert [int(t) for t in sched.timesteps] == timesteps
    acf = s.data["alphas_cumprod"]

    def run(steps):
        x = torch.randn(B, 3, s.unet_cfg["sample_size"], s.unet_cfg["sample_size"],
                        generator=torch.Generator().manual_seed(c["seed"]))
        for t in steps:
            out = s.denoise(torch.cat([x, x]), torch.full((2 * B,), t, dtype=torch.long), *both)
            u, cc = out[:B], out[B:]
            raw = u + (cc - u) * w
            if s.impl == "diffusers":
                x = sched.step(raw, t, x).prev_sample
                continue
            x0 = raw.clamp(-1, 1)
            prev = t - ratio
            ab_t = float(acf[t])
            ab_s = float(acf[prev]) if prev >= 0 else 1.0
            kt, ks = s.k(t), s.k(prev)
            bt = bs = None
            if kt and ks:
                r = s.adapter(torch.cat([x0, x0]), torch.cat([torch.full((B,), t), torch.full((B,), prev)]), cond2[0], cond2[1])
                bt, bs = r[:B] * kt, r[B:] * ks
            elif kt:
                bt = s.adapter(x0, torch.full((B,), t), cond[0], cond[1]) * kt
            elif ks:
                bs = s.adapter(x0, torch.full((B,), prev), cond[0], cond[1]) * ks
            y = x - bt if bt is not None else x
            eps = (y - raw * math.sqrt(ab_t)) / math.sqrt(1 - ab_t)
            x = x0 * math.sqrt(ab_s) + eps * math.sqrt(max(0.0, 1 - ab_s))
            if bs is not None:
                x = x + bs
        return x

    with torch.inference_mode():
        run(timesteps[: c["warmup_steps"]])
        times, x = [], None
        for _ in range(c["repeats"]):
            t0 = time.perf_counter()
            x = run(timesteps)
            times.append(time.perf_counter() - t0)
    save_safetensors({"samples": x}, os.path.join(s.dir, f"{s.impl}_samples.safetensors"))
    return {"images_per_s": B * len(times) / sum(times), "run_seconds": times,
            "parameters": sum(p.numel() for p in s.parameters())}


# ----------------------------------------------------------------------------- FLOPs and profile
MATMUL_OPS = {"aten::conv2d", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def profiled_flops(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.events() if e.name in MATMUL_OPS and e.flops)


def flops(s):
    B, L = 4, s.data["table_tokens"].shape[1]
    size = s.unet_cfg["sample_size"]
    x = torch.randn(B, 3, size, size)
    t = torch.full((B,), 500)
    tok, mask, pooled = torch.randn(B, L, s.unet_cfg["context_dim"]), torch.ones(B, L, dtype=torch.bool), torch.randn(B, s.unet_cfg["pooled_dim"])
    with torch.inference_mode():
        out = {"unet_forward_flops_per_image": profiled_flops(lambda: s.denoise(x, t, tok, mask, pooled)) / B}
        if s.adapter is not None:
            out["adapter_forward_flops_per_image"] = profiled_flops(lambda: s.adapter(x, t, tok, mask)) / B
    return out


def linear_as_conv(x, weight, bias=None):
    """Swift's `Kernels.linearAsConvolution`: a linear layer over >= 256 rows as a oneDNN 1x1
    convolution over a channels-last view of the rows (bit-identical results here)."""
    c, o = x.shape[-1], weight.shape[0]
    rows = x.numel() // c if c else 0
    n = x.shape[-2] if x.dim() >= 3 else next((k for k in (256, 128, 64) if rows % k == 0), 0)
    if rows < 256 or n == 0 or rows % n:
        return F.linear(x, weight, bias)
    y = F.conv2d(x.contiguous().view(rows // n, n, 1, c).permute(0, 3, 1, 2), weight.view(o, c, 1, 1), bias)
    return y.permute(0, 2, 3, 1).reshape(*x.shape[:-1], o)


def profile(s, swift_kernels=False):
    """Prints where the twin's time goes (not JSON; for docs/NOTES.md). With `swift_kernels`
    the twin's linear layers use Swift's kernel choice, to show where Swift's time goes."""
    if swift_kernels:
        torch.nn.Linear.forward = lambda self, x: linear_as_conv(x, self.weight, self.bias)
    spec = s.spec
    B = spec["train"]["batch"]
    size = s.unet_cfg["sample_size"]
    L = s.data["table_tokens"].shape[1]
    x = torch.randn(B, 3, size, size)
    t = torch.randint(0, s.T, (B,))
    tok, mask, pooled = s.data["table_tokens"][:1].expand(B, -1, -1), s.data["table_mask"][:1].bool().expand(B, -1), s.data["table_pooled"][:1].expand(B, -1)
    params = s.parameters()
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        r = s.adapter(x, t, tok, mask)
        loss = (s.unet(x + r * 0.1, t, tok, mask, pooled) - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with torch.autograd.profiler.profile() as prof:
        step()
    label = "twin with Swift's linear kernels" if swift_kernels else "twin"
    print(f"== {label}: training step, batch {B}, {torch.get_num_threads()} thread(s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    Bs = 2 * spec["sample"]["batch"]
    xs = torch.randn(Bs, 3, size, size)
    with torch.inference_mode():
        s.unet(xs, torch.full((Bs,), 500), tok[:1].expand(Bs, -1, -1), mask[:1].expand(Bs, -1), pooled[:1].expand(Bs, -1))
        with torch.autograd.profiler.profile() as prof:
            s.unet(xs, torch.full((Bs,), 500), tok[:1].expand(Bs, -1, -1), mask[:1].expand(Bs, -1), pooled[:1].expand(Bs, -1))
    print(f"== {label}: U-Net forward (sampling call), batch {Bs}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
    return {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["check", "train", "sample", "flops", "profile"])
    parser.add_argument("dir")
    parser.add_argument("--impl", choices=["twin", "diffusers"], default="twin")
    parser.add_argument("--swift-kernels", action="store_true", help="profile: linear layers as Swift runs them")
    args = parser.parse_args()
    s = Setup(args.dir, args.impl)
    if args.command == "profile":
        result = profile(s, args.swift_kernels)
    else:
        result = {"check": check, "train": train, "sample": sample, "flops": flops}[args.command](s)
    result.update({"impl": args.impl, "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
                   "torch": torch.__version__})
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # a clear message and a non-zero status for the Swift side
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
