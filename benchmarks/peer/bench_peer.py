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
  edit      times the one-shot video edit of VideoEditPipeline.edit (Pipelines/VideoEdit.swift):
            tuning, contextual DDIM inversion recording attention maps, guided contextual DDIM
            sampling with attention fusion (bench.json's `edit`, or `edit_check` with --check),
            `repeats` times from freshly loaded inflated weights (`video_unet/`, `video_adapter/`,
            `edit_inputs.safetensors`); writes twin_edit[_check].safetensors and compares with
            swift_edit[_check].safetensors when present. Twin only.
`--impl diffusers` runs diffusers' UNet2DConditionModel of the same widths instead of the twin
(no adapter: plain diffusion, same loss and optimizer). Runs on Debian's python3-torch 1.13.
"""
import argparse
import json
import math
import os
import struct
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


def _norm_weights_like_input():
    """libtorch 1.13's CPU GroupNorm/LayerNorm take no float32 weight with a bfloat16 input,
    which autocast hands them; cast the (small) weights to the input's dtype, as Swift does."""
    group_norm, layer_norm = F.group_norm, F.layer_norm

    def gn(x, groups, weight=None, bias=None, eps=1e-5):
        cast = (lambda t: t if t is None or t.dtype == x.dtype else t.to(x.dtype))
        return group_norm(x, groups, cast(weight), cast(bias), eps)

    def ln(x, shape, weight=None, bias=None, eps=1e-5):
        cast = (lambda t: t if t is None or t.dtype == x.dtype else t.to(x.dtype))
        return layer_norm(x, shape, cast(weight), cast(bias), eps)

    F.group_norm, F.layer_norm = gn, ln


class Setup:
    def __init__(self, d, impl, precision="fp32"):
        with open(os.path.join(d, "bench.json")) as f:
            self.spec = json.load(f)
        torch.set_num_threads(self.spec["threads"])
        self.dir, self.impl, self.precision = d, impl, precision
        if precision == "bf16":
            _norm_weights_like_input()
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
        # bench.json's device (Swift's --device): the networks and the data there, every random
        # draw on the CPU generator and moved (as the Swift side draws), full fp32 (no TF32).
        self.device = torch.device(self.spec.get("device") or "cpu")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            self.unet.to(self.device)
            if self.adapter is not None:
                self.adapter.to(self.device)
            self.data = {k: (v if k == "alphas_cumprod" else v.to(self.device)) for k, v in self.data.items()}

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def k(self, t):
        """k_t = sqrt(ab)(1 - sqrt(ab)), 0 at the clean level and at T - 1."""
        if t < 0 or t == self.T - 1:
            return 0.0
        s = math.sqrt(float(self.data["alphas_cumprod"][t]))
        return s * (1 - s)

    def autocast(self):
        """bf16: PyTorch's automatic mixed precision (what a PyTorch user would turn on)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def denoise(self, x, t, tokens, mask, pooled):
        with self.autocast():
            if self.impl == "twin":
                out = self.unet(x, t, tokens, mask, pooled)
            else:
                out = self.unet(x, t, encoder_hidden_states=tokens, encoder_attention_mask=mask, class_labels=pooled).sample
        return out.float()

    def adapt(self, x0, t, tokens, mask):
        with self.autocast():
            return self.adapter(x0, t, tokens, mask).float()

    def parameters(self):
        return list(self.unet.parameters()) + (list(self.adapter.parameters()) if self.adapter is not None else [])


# ----------------------------------------------------------------------------- check
def check(s):
    inputs = load_safetensors(os.path.join(s.dir, "check_inputs.safetensors"))
    swift = load_safetensors(os.path.join(s.dir, "swift_outputs.safetensors"))
    inputs = {k: v.to(s.device) for k, v in inputs.items()}
    mask = inputs["mask"].bool()
    with torch.inference_mode():
        u = s.unet.eval()(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, inputs["pooled"]).cpu()
        a = s.adapter.eval()(inputs["x"], inputs["timesteps"], inputs["tokens"], mask).cpu()
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
        return perm.to(s.device)

    def rows(r):
        return table[0][r], table[1][r], table[2][r]

    def step(i):
        for group in opt.param_groups:
            group["lr"] = lr_at(i)
        idx = indices(i)
        x0 = pixels[idx]
        keep = torch.rand(B, generator=g).to(s.device)
        t_cpu = torch.randint(0, s.T, (B,), generator=g)
        t = t_cpu.to(s.device)
        noise = torch.randn(x0.shape, generator=g).to(s.device)
        r_true = image_rows[idx]
        r_den = torch.where(keep < c["condition_dropout"], torch.full_like(r_true, null_row), r_true)
        tok, mask, pooled = rows(r_den)
        a = s.ac[t_cpu]
        shape = (B, 1, 1, 1)
        xt = x0 * a.sqrt().float().reshape(shape).to(s.device) + noise * (1 - a).sqrt().float().reshape(shape).to(s.device)
        if s.adapter is not None:
            ttok, tmask, _ = rows(r_true)
            r = s.adapt(x0, t, ttok, tmask)
            xt = xt + r * torch.tensor([s.k(int(v)) for v in t_cpu], dtype=torch.float64).float().reshape(shape).to(s.device)
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
        s.synchronize()
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
                        generator=torch.Generator().manual_seed(c["seed"])).to(s.device)
        for t in steps:
            out = s.denoise(torch.cat([x, x]), torch.full((2 * B,), t, dtype=torch.long, device=s.device), *both)
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
                r = s.adapt(torch.cat([x0, x0]), torch.cat([torch.full((B,), t), torch.full((B,), prev)]).to(s.device),
                              cond2[0], cond2[1])
                bt, bs = r[:B] * kt, r[B:] * ks
            elif kt:
                bt = s.adapt(x0, torch.full((B,), t, device=s.device), cond[0], cond[1]) * kt
            elif ks:
                bs = s.adapt(x0, torch.full((B,), prev, device=s.device), cond[0], cond[1]) * ks
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
            s.synchronize()
            times.append(time.perf_counter() - t0)
    side = s.impl if s.precision == "fp32" else f"{s.impl}-{s.precision}"
    save_safetensors({"samples": x.cpu()}, os.path.join(s.dir, f"{side}_samples.safetensors"))
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
    x = torch.randn(B, 3, size, size).to(s.device)
    t = torch.full((B,), 500, device=s.device)
    tok, mask, pooled = (torch.randn(B, L, s.unet_cfg["context_dim"]).to(s.device), torch.ones(B, L, dtype=torch.bool, device=s.device),
                         torch.randn(B, s.unet_cfg["pooled_dim"]).to(s.device))
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


# ----------------------------------------------------------------------------- video edit
# A line-by-line port of VideoEditPipeline.edit (Sources/ContextDiff/Pipelines/VideoEdit.swift)
# with the samplers it uses (Process/DDIMSampler.swift, DDIMInverseSampler.swift,
# ContextBias.swift, PredictionConversions.swift: same float32 scalars), AttentionFusionStore
# (Pipelines/AttentionFusion.swift); tuning uses torch.optim.AdamW and clip_grad_norm_, as train().
def f32(x):
    """x rounded to float32, as a Python float (Swift's `Float`)."""
    return struct.unpack("f", struct.pack("f", x))[0]


class EditSchedule:
    """The float32 ᾱ of NoiseSchedule and the levels of the samplers (ContextBias.swift NoiseLevel)."""

    def __init__(self, alphas_cumprod):
        self.ab = [float(v) for v in alphas_cumprod.float()]  # exact float32 values
        self.T = len(self.ab)

    def k(self, t):
        """NoiseSchedule.contextCoefficient: sqrt(ᾱ)(1 − sqrt(ᾱ)) in Double, 0 at −1 and T − 1."""
        if t == -1 or t == self.T - 1:
            return 0.0
        s = math.sqrt(self.ab[t])
        return s * (1 - s)

    def level(self, t):
        """(ᾱ, bias timestep or None, k) of a timestep; t < 0 is the clean level (set_alpha_to_one)."""
        if t < 0:
            return 1.0, None, 0.0
        k = self.k(t)
        return self.ab[t], (None if k == 0 else t), k


def level_scalars(ab):
    """LevelScalars: (1 − ᾱ, sqrt(ᾱ), sqrt(1 − ᾱ)), each a float32 computation."""
    one_minus = f32(1.0 - ab)
    return one_minus, f32(math.sqrt(ab)), f32(math.sqrt(one_minus))


def original_sample(prediction, out, sample, ab):
    _, sa, s1 = level_scalars(ab)
    if prediction == "epsilon":
        return (sample - out * s1) / sa
    if prediction == "sample":
        return out
    return sample * sa - out * s1


def contextual_noise(prediction, out, sample, raw, ab, bias):
    """DiffusionSampler.contextualNoise: (x − b − sqrt(ᾱ)·x̂0_raw)/sqrt(1 − ᾱ), 0 at ᾱ = 1."""
    one_minus, sa, s1 = level_scalars(ab)
    if prediction == "sample":
        residual = (sample if bias is None else sample - bias) - raw * sa
        return torch.zeros_like(residual) if one_minus == 0 else residual / s1
    eps = out if prediction == "epsilon" else out * sa + sample * s1
    if bias is None or not one_minus > 0:
        return eps
    return eps - bias / s1


def add_bias(x, b):
    """Tensor.addingBias: x − (0 − b)."""
    return x if b is None else x - (0 - b)


def step_biases(context, x0, current, target):
    """StepBiases: b = 0 − r·(−k) at both levels, the adapter batched when both are non-zero."""
    if context is None:
        return None, None
    (_, a, ka), (_, b, kb) = current, target
    if a is not None and b is not None:
        ra, rb = context.contexts(x0, (a, b))
        return 0 - ra * (-ka), 0 - rb * (-kb)
    if a is not None:
        return 0 - context.context(x0, a) * (-ka), None
    if b is not None:
        return None, 0 - context.context(x0, b) * (-kb)
    return None, None


def ddim_step(sched, prediction, ratio, out, t, sample, context):
    """DDIMSampler.step with η = 0, clip ±1 (.diffusersDefault), set_alpha_to_one."""
    current, target = sched.level(t), sched.level(t - ratio)
    raw = original_sample(prediction, out, sample, current[0])
    x0 = raw.clamp(-1.0, 1.0)
    b_cur, b_tgt = step_biases(context, x0, current, target)
    eps = contextual_noise(prediction, out, sample, raw, current[0], b_cur)
    direction_sq = f32(1.0 - target[0])  # 1 − ᾱ_s − σ² with σ = 0, in Float
    direction = eps * f32(math.sqrt(max(direction_sq, 0.0)))
    return add_bias(x0 * f32(math.sqrt(target[0])) + direction, b_tgt)


def ddim_inverse_step(sched, prediction, ratio, out, t, sample, context):
    """DDIMInverseSampler.step: from level s = min(t − T//n, T − 1) up to t."""
    source, target = sched.level(min(t - ratio, sched.T - 1)), sched.level(t)
    raw = original_sample(prediction, out, sample, source[0])
    x0 = raw.clamp(-1.0, 1.0)
    b_cur, b_tgt = step_biases(context, x0, source, target)
    eps = contextual_noise(prediction, out, sample, raw, source[0], b_cur)
    direction = eps * f32(math.sqrt(f32(1.0 - target[0])))
    return add_bias(x0 * f32(math.sqrt(target[0])) + direction, b_tgt)


class VideoAdapterContext:
    """r_φ(x0, c, t) of the inflated adapter with the condition (one row per frame) bound."""

    def __init__(self, adapter, condition, frames):
        self.adapter, self.condition, self.frames = adapter, condition, frames

    def context(self, x0, t):
        b = x0.shape[0]
        return self.adapter(x0, torch.full((b,), t, dtype=torch.long), self.condition[0], self.condition[1],
                            frames=self.frames)

    def contexts(self, x0, ts):
        b = x0.shape[0]
        t = torch.cat([torch.full((b,), ts[0], dtype=torch.long), torch.full((b,), ts[1], dtype=torch.long)])
        both = concatenate_conditions(self.condition, self.condition)
        out = self.adapter(torch.cat([x0, x0]), t, both[0], both[1], frames=self.frames)
        return out[:b], out[b:2 * b]


def repeat_condition(cond, times):
    """TextCondition.repeated: each row `times` times (a, a, b, b)."""
    n = cond[0].shape[0]
    idx = torch.arange(n).unsqueeze(1).expand(n, times).reshape(n * times)
    return tuple(v.index_select(0, idx) for v in cond)


def concatenate_conditions(a, b):
    """TextCondition.concatenate: pad tokens with zeros and the mask with false to the longer length."""
    length = max(a[0].shape[1], b[0].shape[1])

    def padded(c):
        tok, mask, pooled = c
        extra = length - tok.shape[1]
        if extra <= 0:
            return c
        return (torch.cat([tok, tok.new_zeros(tok.shape[0], extra, tok.shape[2])], dim=1),
                torch.cat([mask.bool(), torch.zeros(mask.shape[0], extra, dtype=torch.bool)], dim=1), pooled)

    pa, pb = padded(a), padded(b)
    return torch.cat([pa[0], pb[0]]), torch.cat([pa[1].bool(), pb[1].bool()]), torch.cat([pa[2], pb[2]])


def align_tokens(source, target):
    """AttentionFusionStore.alignTokens: longest-common-subsequence alignment (None: a new word)."""
    n, m = len(source), len(target)
    lcs = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            lcs[i][j] = lcs[i + 1][j + 1] + 1 if source[i] == target[j] else max(lcs[i + 1][j], lcs[i][j + 1])
    out, i, j = [None] * m, 0, 0
    while i < n and j < m:
        if source[i] == target[j]:
            out[j] = i
            i, j = i + 1, j + 1
        elif lcs[i + 1][j] >= lcs[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


class AttentionFusionStore:
    """Pipelines/AttentionFusion.swift: records the softmax weights of the stored sites at fused
    timesteps during inversion; at fused editing steps substitutes them (self-attention: every
    row, both guidance halves; cross-attention: the conditional half, the aligned source column
    for each target token, its own column for a new word)."""
    IDLE = ("idle", None)

    def __init__(self, fusion, fused_timesteps):
        self.fraction = float(fusion["fraction"])
        self.self_max = int(fusion["self_attention_max_resolution"])
        self.cross_max = int(fusion["cross_attention_max_resolution"])
        self.budget = int(fusion.get("budget_bytes", 256 << 20))
        self.fused = set(fused_timesteps)
        self.mode = self.IDLE
        self.alignment = []
        self.maps = {}
        self.bytes = 0
        self.injections = 0
        self.bound = 0
        self._cross_index = {}

    @staticmethod
    def fused_timesteps(fraction, timesteps):
        """The first ceil(fraction · n) timesteps of a DDIM run (AttentionFusionConfig.fusedTimesteps)."""
        n = math.ceil(fraction * len(timesteps))
        return set(timesteps[:min(n, len(timesteps))])

    def stores(self, kind, resolution):
        return resolution <= (self.self_max if kind == "self" else self.cross_max)

    def storage_bytes(self, unet, frames, source_tokens, frame_attention, steps, videos=1):
        """AttentionFusionConfig.storageBytes: the exact bytes one recorded inversion holds."""
        per_step = 0
        for _, res, block in unet.transformers():
            n = res * res
            if block.attn1 is not None and self.stores("self", res):
                per_step += videos * frames * block.attn1.heads * n * (2 * n if frame_attention == "sparse-causal" else n)
            if block.attn2 is not None and self.stores("cross", res):
                per_step += videos * frames * block.attn2.heads * n * source_tokens
        return per_step * min(math.ceil(self.fraction * steps), steps) * 4

    def _cross(self, keys, source_keys, dtype):
        cached = self._cross_index.get((keys, source_keys, dtype))
        if cached is None:
            alignment = (list(self.alignment) + [None] * max(0, keys - len(self.alignment)))[:keys]
            index = torch.tensor([min(0 if a is None else a, source_keys - 1) for a in alignment], dtype=torch.long)
            keep = torch.tensor([0.0 if a is None else 1.0 for a in alignment], dtype=torch.float32).reshape(1, 1, keys).to(dtype)
            cached = self._cross_index[(keys, source_keys, dtype)] = (index, keep, 1 - keep)
        return cached

    def process(self, weights, layer, kind, resolution):
        mode, t = self.mode
        if mode == "idle":
            return weights
        key = (t, layer, kind, resolution)
        if mode == "record":
            if t not in self.fused or not self.stores(kind, resolution):
                return weights
            kept = weights.detach().to(torch.float32).contiguous()
            size = kept.numel() * 4
            if self.bytes + size > self.budget:
                raise RuntimeError(f"attention fusion needs more than its budget ({self.bytes + size} > {self.budget} bytes)")
            old = self.maps.get(key)
            if old is not None:
                self.bytes -= old.numel() * 4
            self.maps[key] = kept
            self.bytes += size
            return weights
        stored = self.maps.get(key)
        if stored is None:
            return weights
        rows, total = stored.shape[0], weights.shape[0]
        if total % rows or weights.dim() != 3 or weights.shape[1] != stored.shape[1]:
            raise RuntimeError(f"fusion: stored map {tuple(stored.shape)} does not fit {tuple(weights.shape)} at {layer}.{kind}@{resolution}")
        self.injections += 1
        s = stored.to(weights.dtype)
        if kind == "self":
            if stored.shape[2] != weights.shape[2]:
                raise RuntimeError(f"fusion: stored map {tuple(stored.shape)} does not fit {tuple(weights.shape)} at {layer}.{kind}@{resolution}")
            return s if total == rows else torch.cat([s] * (total // rows))
        index, keep, drop = self._cross(weights.shape[2], stored.shape[2], weights.dtype)
        own = weights[total - rows:total]
        fused = s.index_select(2, index) * keep + own * drop
        return fused if total == rows else torch.cat([weights[:total - rows], fused])


def is_temporal_key(key):
    return ".temporal." in key or key.startswith("temporal.")


class VideoEdit:
    """One edit's settings and inputs (bench.json `edit` / `edit_check`, edit_inputs.safetensors)."""
    METHODS = ("contextdiff", "fatezero", "tuneavideo")

    def __init__(self, d, check):
        with open(os.path.join(d, "bench.json")) as f:
            spec = json.load(f)
        if "threads" in spec:
            torch.set_num_threads(spec["threads"])
        key = "edit_check" if check else "edit"
        if not spec.get(key):
            raise ValueError(f"bench.json has no {key} settings")
        self.dir, self.check, e = d, check, spec[key]
        self.e = e
        self.method = e.get("method", "contextdiff")
        if self.method not in self.METHODS:
            raise ValueError(f"unknown edit method {self.method!r} (one of {', '.join(self.METHODS)})")
        self.uses_fusion, self.uses_adapter = self.method != "tuneavideo", self.method == "contextdiff"
        self.tune_steps, self.lr = int(e["tune_steps"]), float(e["tune_learning_rate"])
        self.steps, self.guidance, self.seed = int(e["steps"]), float(e["guidance"]), int(e["seed"])
        self.frame_attention = e.get("frame_attention", "sparse-causal")
        self.fusion = dict(e.get("fusion") or {})
        self.fusion.setdefault("fraction", 0.5)
        self.fusion.setdefault("self_attention_max_resolution", 8)
        self.fusion.setdefault("cross_attention_max_resolution", 16)
        self.inversion_evaluation = e.get("inversion_evaluation", "source")
        self.repeats = int(e.get("repeats", 1))
        data = load_safetensors(os.path.join(d, "data.safetensors"))
        self.sched = EditSchedule(data["alphas_cumprod"])
        T = self.sched.T
        # VideoEditOptions.validate
        if self.tune_steps < 0 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"tuning: steps must be ≥ 0 and the learning rate > 0 (got {self.tune_steps}, {self.lr})")
        if not 0 < self.steps <= T:
            raise ValueError(f"--steps must be in 1...{T}, got {self.steps}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"--guidance must be ≥ 0, got {self.guidance}")
        if not 0 <= self.fusion["fraction"] <= 1:
            raise ValueError(f"fusion fraction must be in [0, 1], got {self.fusion['fraction']}")
        if self.frame_attention not in ("sparse-causal", "per-frame"):
            raise ValueError(f"unknown frame attention {self.frame_attention!r}")
        if self.inversion_evaluation not in ("source", "target"):
            raise ValueError(f"unknown inversion evaluation {self.inversion_evaluation!r}")
        if self.repeats < 1:
            raise ValueError("repeats must be ≥ 1")

        inputs = load_safetensors(os.path.join(d, "edit_inputs.safetensors"))
        self.video = inputs["video"].float().contiguous()
        # VideoEditPipeline.encode: token states truncated to the model's limit (ModelIndex's
        # text encoder max_tokens, 32 by default).
        limit = int(e.get("max_tokens", 32))
        conds, ids = {}, {}
        for prefix in ("source", "target", "null"):
            tok, mask, pooled = inputs[prefix + "_tokens"], inputs[prefix + "_mask"].bool(), inputs[prefix + "_pooled"]
            conds[prefix] = (tok[:, :limit].contiguous(), mask[:, :limit].contiguous(), pooled)
            if prefix + "_ids" in inputs:
                ids[prefix] = [int(v) for v in inputs[prefix + "_ids"].reshape(-1)][:limit]
        self.conds = conds
        if "alignment" in inputs:
            self.alignment = [None if int(a) < 0 else int(a) for a in inputs["alignment"].reshape(-1)]
        elif "source" in ids and "target" in ids:
            self.alignment = align_tokens(ids["source"], ids["target"])
        else:
            raise ValueError("edit_inputs.safetensors has neither `alignment` nor `source_ids`/`target_ids`")

        self.unet_dir, self.adapter_dir = os.path.join(d, "video_unet"), os.path.join(d, "video_adapter")
        with open(os.path.join(self.unet_dir, "config.json")) as f:
            self.unet_cfg = json.load(f)
        self.unet_state = load_safetensors(os.path.join(self.unet_dir, "model.safetensors"))
        self.prediction = self.unet_cfg.get("prediction", "sample")
        if self.prediction not in ("sample", "epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction type {self.prediction!r}")
        self.adapter_cfg = self.adapter_state = None
        if self.uses_adapter:
            if not os.path.isdir(self.adapter_dir):
                raise ValueError("the contextdiff edit needs video_adapter/ (the twin does not draw a fresh adapter)")
            with open(os.path.join(self.adapter_dir, "config.json")) as f:
                self.adapter_cfg = json.load(f)
            self.adapter_state = load_safetensors(os.path.join(self.adapter_dir, "model.safetensors"))
        c = self.unet_cfg
        s = self.video.shape
        if len(s) != 4 or s[0] == 0 or list(s[1:]) != [c["in_channels"], c["sample_size"], c["sample_size"]]:
            raise ValueError(f"video frames must be [F, {c['in_channels']}, {c['sample_size']}, {c['sample_size']}], got {list(s)}")
        self.frames = s[0]
        if "frames" in e and int(e["frames"]) != self.frames:
            raise ValueError(f"bench.json says {e['frames']} frames, the video has {self.frames}")

    def load_models(self):
        """Freshly built inflated networks with the saved weights (tuning changes them in place)."""
        unet = UNet(self.unet_cfg)
        unet.inflate()
        unet.load_state_dict(self.unet_state, strict=True)
        adapter = None
        if self.uses_adapter:
            adapter = ContextAdapter(self.adapter_cfg)
            adapter.inflate()
            adapter.load_state_dict(self.adapter_state, strict=True)
        return unet.eval(), (adapter.eval() if adapter is not None else None)

    # -- VideoEditPipeline.tune
    def tune(self, unet, adapter, condition):
        if self.tune_steps <= 0:
            return []
        video, F_, sched = self.video, self.frames, self.sched
        trainable = [p for k, p in unet.named_parameters()
                     if is_temporal_key(k) or k.endswith("attn1.to_q.weight") or k.endswith("attn2.to_q.weight")]
        if adapter is not None:
            trainable += list(adapter.parameters())
        every = list(unet.parameters()) + (list(adapter.parameters()) if adapter is not None else [])
        for p in every:
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        # The optimiser and clipping a PyTorch user runs, as train() does (the Swift side's AdamW
        # updates the first moment with lerp_ instead of mul_ + add_: equal up to rounding).
        optimizer = torch.optim.AdamW(trainable, lr=self.lr, weight_decay=0.01)
        g = torch.Generator().manual_seed((self.seed + 0x70E) % (1 << 64))
        unet.train()
        if adapter is not None:
            adapter.train()
        shape = (F_, 1, 1, 1)

        def per_sample(v):
            return torch.tensor([v] * F_, dtype=torch.float64).reshape(shape).to(video.dtype)

        losses = []
        try:
            for _ in range(self.tune_steps):
                # ContextualDiffusion.sampleTimesteps(count: 1) then randn(video.shape), one generator.
                t = int(torch.randint(0, sched.T, (1,), generator=g)[0])
                noise = torch.randn(video.shape, generator=g)
                tt = torch.full((F_,), t, dtype=torch.long)
                a = float(sched.ab[t])
                # ContextualDiffusion.trainingLoss: r_φ(x0, c, t) inside Eq. 3, uniform weighting.
                r = adapter(video, tt, condition[0], condition[1], frames=F_) if adapter is not None else None
                xt = video * per_sample(math.sqrt(a)) + noise * per_sample(math.sqrt(1 - a))
                if r is not None:
                    xt = xt + r * per_sample(sched.k(t))
                out = unet(xt, tt, *condition, frames=F_, frame_attention=self.frame_attention)
                if self.prediction == "sample":
                    target = video
                elif self.prediction == "epsilon":
                    target = noise
                else:
                    target = noise * per_sample(math.sqrt(a)) - video * per_sample(math.sqrt(1 - a))
                loss = (out - target).square().mean(dim=(1, 2, 3)).mean()
                value = loss.item()
                if not math.isfinite(value):
                    raise ValueError(f"tuning diverged (loss {value}); lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                losses.append(value)
        finally:
            for p in trainable:
                p.requires_grad_(False)
                p.grad = None
            unet.eval()
            if adapter is not None:
                adapter.eval()
        return losses

    # -- VideoEditPipeline.invert (call in inference mode)
    def invert(self, unet, context, condition, store):
        sched, F_, n = self.sched, self.frames, self.steps
        ratio = sched.T // n
        timesteps = [i * ratio for i in range(n)]  # leading spacing, ascending
        x = self.video
        for t in timesteps:
            s = min(t - ratio, sched.T - 1)
            at = t if self.inversion_evaluation == "target" else s
            if at < 0:
                # The clean level: x̂0 is the sample itself.
                out = x if self.prediction == "sample" else torch.zeros_like(x)
            else:
                if store is not None:
                    store.mode = ("record", at)
                try:
                    out = unet(x, torch.full((F_,), at, dtype=torch.long), *condition, frames=F_,
                               frame_attention=self.frame_attention, control=store)
                finally:
                    if store is not None:
                        store.mode = store.IDLE
            x = ddim_inverse_step(sched, self.prediction, ratio, out, t, x, context)
        # Evaluated at s, the inversion never calls the model at the last timestep: one more
        # call records the maps the editing's first step needs.
        if store is not None and self.inversion_evaluation == "source" and timesteps and timesteps[-1] in store.fused:
            last = timesteps[-1]
            store.mode = ("record", last)
            try:
                unet(x, torch.full((F_,), last, dtype=torch.long), *condition, frames=F_,
                     frame_attention=self.frame_attention, control=store)
            finally:
                store.mode = store.IDLE
        return x

    # -- VideoEditPipeline.sample (call in inference mode)
    def sample(self, unet, context, latent, condition, unconditional, store):
        sched, F_, n, w = self.sched, self.frames, self.steps, self.guidance
        ratio = sched.T // n
        both = concatenate_conditions(unconditional, condition)
        x = latent
        for t in [i * ratio for i in range(n)][::-1]:
            if store is not None and t in store.fused:
                store.mode = ("inject", t)
            try:
                if w == 1:
                    out = unet(x, torch.full((F_,), t, dtype=torch.long), *condition, frames=F_,
                               frame_attention=self.frame_attention, control=store)
                else:
                    o = unet(torch.cat([x, x]), torch.full((2 * F_,), t, dtype=torch.long), *both, frames=F_,
                             frame_attention=self.frame_attention, control=store)
                    u, c = o[:F_], o[F_:2 * F_]
                    out = u + (c - u) * w
            finally:
                if store is not None:
                    store.mode = store.IDLE
            x = ddim_step(sched, self.prediction, ratio, out, t, x, context)
        return x

    # -- VideoEditPipeline.edit
    def run(self, unet, adapter):
        """Returns (edited, inverted, losses, phases, store)."""
        F_ = self.frames
        source = repeat_condition(self.conds["source"], F_)
        target = repeat_condition(self.conds["target"], F_)
        null = repeat_condition(self.conds["null"], F_)
        phases = {}
        started = time.perf_counter()
        store = None  # the budget is checked before tuning, which changes the weights in place
        if self.uses_fusion and self.fusion["fraction"] > 0:
            ratio = self.sched.T // self.steps
            timesteps = [i * ratio for i in range(self.steps)][::-1]
            store = AttentionFusionStore(self.fusion, AttentionFusionStore.fused_timesteps(self.fusion["fraction"], timesteps))
            store.alignment = self.alignment
            store.bound = store.storage_bytes(unet, F_, source[0].shape[1], self.frame_attention, self.steps)
            if store.bound > store.budget:
                raise RuntimeError(f"attention fusion needs more than its budget ({store.bound} > {store.budget} bytes)")
        tuning_start = time.perf_counter()
        losses = self.tune(unet, adapter, source)
        inversion_start = time.perf_counter()
        if self.tune_steps > 0:  # Swift reports a phase only once its first progress call happened
            phases["tuning"] = inversion_start - tuning_start
        with torch.inference_mode():
            context = VideoAdapterContext(adapter, source, F_) if adapter is not None else None
            latent = self.invert(unet, context, source, store)
            editing_start = time.perf_counter()
            context = VideoAdapterContext(adapter, target, F_) if adapter is not None else None
            edited = self.sample(unet, context, latent, target, null, store)
        ended = time.perf_counter()
        phases["inversion"] = editing_start - inversion_start
        phases["editing"] = ended - editing_start
        return edited, latent, losses, phases, ended - started, store


def edit(d, check):
    job = VideoEdit(d, check)
    times, first, phases = [], None, {}
    for _ in range(job.repeats):
        unet, adapter = job.load_models()
        edited, inverted, losses, phases, seconds, store = job.run(unet, adapter)
        times.append(seconds)
        if first is None:
            first = (edited, inverted, losses, store)
        del unet, adapter
    edited, inverted, losses, store = first
    suffix = "_check" if check else ""
    # As the Swift worker: float64 losses, [0] when there was no tuning.
    loss_tensor = torch.tensor(losses if losses else [0.0], dtype=torch.float64)
    save_safetensors({"edited": edited, "inverted": inverted, "tuning_losses": loss_tensor},
                     os.path.join(d, f"twin_edit{suffix}.safetensors"))
    rate = job.frames * len(times) / sum(times)
    result = {"images_per_s": rate, "frames_per_s": rate, "edit_seconds": times, "phase_seconds": phases,
              "tuning_losses": losses, "method": job.method, "frames": job.frames,
              "fusion_injections": store.injections if store is not None else 0,
              "fusion_bytes": store.bytes if store is not None else 0,
              "fusion_bound": store.bound if store is not None else 0}
    swift_path = os.path.join(d, f"swift_edit{suffix}.safetensors")
    if os.path.exists(swift_path):
        swift = load_safetensors(swift_path)
        result["edited_max_abs_diff"] = (edited.double() - swift["edited"].double()).abs().max().item()
        result["inverted_max_abs_diff"] = (inverted.double() - swift["inverted"].double()).abs().max().item()
        sl = swift["tuning_losses"].double().reshape(-1)
        if sl.shape == loss_tensor.shape:
            diff = (loss_tensor - sl).abs().max().item()
        else:
            diff = float("nan")
        result["tuning_loss_max_abs_diff"] = result["tuning_losses_max_abs_diff"] = diff
        result["edited_scale"] = edited.abs().max().item()
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["check", "train", "sample", "flops", "profile", "edit"])
    parser.add_argument("dir")
    parser.add_argument("--impl", choices=["twin", "diffusers"], default="twin")
    parser.add_argument("--swift-kernels", action="store_true", help="profile: linear layers as Swift runs them")
    parser.add_argument("--check", action="store_true", help="edit: the short equivalence edit (bench.json's edit_check)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="train and sample: bf16 runs the networks under torch.autocast(bfloat16)")
    args = parser.parse_args()
    if args.command == "edit":
        if args.impl != "twin":
            print(json.dumps({"error": "edit: diffusers has no video edit; the edit runs on the twin only (--impl twin)"}))
            sys.exit(2)
        result = edit(args.dir, args.check)
        result.update({"impl": args.impl, "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
                       "torch": torch.__version__})
        print(json.dumps(result))
        return
    s = Setup(args.dir, args.impl, args.precision)
    if args.command == "profile":
        result = profile(s, args.swift_kernels)
    else:
        result = {"check": check, "train": train, "sample": sample, "flops": flops}[args.command](s)
    result.update({"impl": args.impl, "threads": torch.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
                   "torch": torch.__version__, "precision": args.precision})
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # a clear message and a non-zero status for the Swift side
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
