#!/usr/bin/env python3
"""Reference data for ContextDiff's noise schedules and DDIM/DDPM samplers,
produced by Hugging Face diffusers itself.

Setup (Debian, torch from apt python3-torch visible through system site packages):

    /usr/bin/python3.11 -m venv --system-site-packages /tmp/dvenv
    /tmp/dvenv/bin/pip install "diffusers==0.27.2" "huggingface_hub<0.26"
    /tmp/dvenv/bin/python scripts/reference/make_scheduler_references.py

Writes Tests/DiffusionTests/Fixtures/diffusers_schedulers.json (path relative to the
repository root; override with --out).

Contents (all float32 values are written as the Python float of the float32 value,
so `Float(Double(text))` recovers the exact float32 bits):

  schedules   alphas_cumprod (and betas) for linear / scaled_linear / squaredcos_cap_v2
              and linear + rescale_betas_zero_snr, T = 1000, from DDIMScheduler.
  timesteps   DDIMScheduler.set_timesteps(n) for every spacing, steps_offset in {0, 1};
              DDIMInverseScheduler.set_timesteps (leading/trailing only; it has no linspace);
              DDPMScheduler.set_timesteps(1000) and (50).
  ddim_loops  diffusers' tests/schedulers/test_scheduler_ddim.py full_loop re-created
              (dummy_sample_deter, dummy_model), several configurations.
  ddim_inverse_loops  same for tests/schedulers/test_scheduler_ddim_inverse.py.
  ddpm        _get_variance(t) for fixed_small / fixed_large, and step() with the
              variance noise forced to zero (randn_tensor monkeypatched).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

import diffusers
import diffusers.schedulers.scheduling_ddpm as ddpm_mod
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "DiffusionTests", "Fixtures", "diffusers_schedulers.json")

T = 1000
BASE_CONFIG = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True)


def f32list(t):
    """float32 tensor -> list of Python floats (exact float32 values, full precision repr)."""
    t = t.detach().to(torch.float32).contiguous().reshape(-1)
    return [float(x) for x in t.tolist()]


def f32(t):
    return float(torch.as_tensor(t, dtype=torch.float32).item())


def ints(t):
    return [int(x) for x in (t.tolist() if isinstance(t, torch.Tensor) else list(t))]


# --- diffusers' SchedulerCommonTest fixtures (tests/schedulers/test_schedulers.py) ---------

def dummy_sample_deter():
    batch_size, num_channels, height, width = 4, 3, 8, 8
    num_elems = batch_size * num_channels * height * width
    sample = torch.arange(num_elems)
    sample = sample.reshape(num_channels, height, width, batch_size)
    sample = sample / num_elems  # int64 / int -> float32 (default dtype)
    sample = sample.permute(3, 0, 1, 2)  # (4, 3, 8, 8)
    return sample


def dummy_model(sample, t):
    # diffusers' dummy_model: t tensor reshaped to (-1, 1, 1, 1) and cast to the sample dtype.
    if isinstance(t, torch.Tensor):
        t = t.reshape(-1, *(1,) * (sample.dim() - 1)).to(sample.dtype)
    return sample * t / (t + 1)


def deterministic_noise():
    # Exactly representable values in {-0.75, -0.5, ..., 0.75}; logical (4,3,8,8) C order.
    return ((torch.arange(768) % 7 - 3).to(torch.float32) / 4).reshape(4, 3, 8, 8)


# --- (1) schedules -------------------------------------------------------------------------

def schedules():
    cases = [
        ("linear", dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02)),
        ("scaled_linear", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
        ("squaredcos_cap_v2", dict(beta_schedule="squaredcos_cap_v2")),
        ("linear_zero_snr", dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, rescale_betas_zero_snr=True)),
        ("scaled_linear_zero_snr", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True)),
    ]
    out = []
    for name, kw in cases:
        s = DDIMScheduler(num_train_timesteps=T, **kw)
        cfg = {k: s.config[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "rescale_betas_zero_snr")}
        out.append(dict(name=name, config=cfg, betas=f32list(s.betas), alphas_cumprod=f32list(s.alphas_cumprod)))
    return out


# --- (2) timesteps -------------------------------------------------------------------------

STEP_COUNTS = [10, 50, 20, 1]
# Extra counts that exercise rounding corner cases of the float arange/linspace paths.
EXTRA_STEP_COUNTS = [2, 3, 7, 13, 30, 33, 37, 100, 250, 333, 500, 666, 999, 1000]


def timesteps():
    out = []
    for spacing in ("leading", "trailing", "linspace"):
        for offset in (0, 1):
            for n in STEP_COUNTS + EXTRA_STEP_COUNTS:
                s = DDIMScheduler(**BASE_CONFIG, timestep_spacing=spacing, steps_offset=offset)
                s.set_timesteps(n)
                out.append(dict(scheduler="DDIMScheduler", spacing=spacing, steps_offset=offset,
                                num_inference_steps=n, timesteps=ints(s.timesteps)))
    inverse = []
    for spacing in ("leading", "trailing"):
        for offset in (0, 1):
            for n in STEP_COUNTS:
                s = DDIMInverseScheduler(**BASE_CONFIG, timestep_spacing=spacing, steps_offset=offset)
                s.set_timesteps(n)
                inverse.append(dict(scheduler="DDIMInverseScheduler", spacing=spacing, steps_offset=offset,
                                    num_inference_steps=n, timesteps=ints(s.timesteps)))
    ddpm = []
    for n in (1000, 50):
        s = DDPMScheduler(**BASE_CONFIG)
        s.set_timesteps(n)
        ddpm.append(dict(scheduler="DDPMScheduler", spacing="leading", steps_offset=0,
                         num_inference_steps=n, timesteps=ints(s.timesteps)))
    return out, inverse, ddpm


# --- (3) DDIM / DDIMInverse full loops -----------------------------------------------------

def summarize(sample):
    a = torch.abs(sample)
    return dict(abs_sum=float(torch.sum(a).item()), abs_mean=float(torch.mean(a).item()))


def ddim_loop(name, config_overrides, n=10, eta=0.0, noise=False, note=None):
    config = dict(BASE_CONFIG)
    config.update(config_overrides)
    s = DDIMScheduler(**config)
    s.set_timesteps(n)
    sample = dummy_sample_deter()
    ratio = s.config.num_train_timesteps // s.num_inference_steps
    steps = []
    for t in s.timesteps:
        residual = dummy_model(sample, t)
        kwargs = {}
        if noise:
            kwargs["variance_noise"] = deterministic_noise()
        out = s.step(residual, t, sample, eta, **kwargs)
        prev_t = int(t) - ratio
        steps.append(dict(
            t=int(t), prev_t=prev_t,
            alpha_prod_t=f32(s.alphas_cumprod[int(t)]),
            alpha_prod_t_prev=f32(s.alphas_cumprod[prev_t] if prev_t >= 0 else s.final_alpha_cumprod),
            pred_original_abs_sum=float(torch.abs(out.pred_original_sample).sum().item()),
            prev_sample_abs_sum=float(torch.abs(out.prev_sample).sum().item()),
        ))
        sample = out.prev_sample
    rec = dict(name=name, scheduler="DDIMScheduler", config={k: s.config[k] for k in sorted(config)},
               num_inference_steps=n, eta=eta, timesteps=ints(s.timesteps), steps=steps,
               final_sample=f32list(sample), **summarize(sample))
    if noise:
        rec["variance_noise"] = "((arange(768) % 7 - 3) / 4) as float32, reshaped (4,3,8,8)"
    if note:
        rec["note"] = note
    return rec


def ddim_inverse_loop(name, config_overrides, n=10, note=None):
    config = dict(BASE_CONFIG)
    config.update(config_overrides)
    s = DDIMInverseScheduler(**config)
    s.set_timesteps(n)
    sample = dummy_sample_deter()
    ratio = s.config.num_train_timesteps // s.num_inference_steps
    steps = []
    for t in s.timesteps:
        residual = dummy_model(sample, t)
        out = s.step(residual, t, sample)
        # DDIMInverseScheduler.step(t): source timestep = min(t - ratio, T-1), target = t.
        src = min(int(t) - ratio, s.config.num_train_timesteps - 1)
        steps.append(dict(
            t=int(t), source_t=src,
            alpha_prod_source=f32(s.alphas_cumprod[src] if src >= 0 else s.initial_alpha_cumprod),
            alpha_prod_target=f32(s.alphas_cumprod[int(t)]),
            pred_original_abs_sum=float(torch.abs(out.pred_original_sample).sum().item()),
            prev_sample_abs_sum=float(torch.abs(out.prev_sample).sum().item()),
        ))
        sample = out.prev_sample
    rec = dict(name=name, scheduler="DDIMInverseScheduler", config={k: s.config[k] for k in sorted(config)},
               num_inference_steps=n, timesteps=ints(s.timesteps), steps=steps,
               final_sample=f32list(sample), **summarize(sample))
    if note:
        rec["note"] = note
    return rec


def ddim_loops():
    return [
        ddim_loop("no_noise", {}, note="diffusers test_full_loop_no_noise"),
        ddim_loop("v_prediction", dict(prediction_type="v_prediction"), note="diffusers test_full_loop_with_v_prediction"),
        ddim_loop("sample_prediction", dict(prediction_type="sample"),
                  note="final step t=0: model output is 0 and alpha_prev = 1, so the result is exactly 0"),
        ddim_loop("sample_prediction_set_alpha_to_one_false", dict(prediction_type="sample", set_alpha_to_one=False)),
        ddim_loop("set_alpha_to_one_false", dict(set_alpha_to_one=False)),
        ddim_loop("set_alpha_to_one_true_beta_start_0.01", dict(set_alpha_to_one=True, beta_start=0.01),
                  note="diffusers test_full_loop_with_set_alpha_to_one"),
        ddim_loop("set_alpha_to_one_false_beta_start_0.01", dict(set_alpha_to_one=False, beta_start=0.01),
                  note="diffusers test_full_loop_with_no_set_alpha_to_one"),
        ddim_loop("steps_offset_1", dict(steps_offset=1)),
        ddim_loop("trailing", dict(timestep_spacing="trailing"),
                  note="step() uses prev_t = t - T // n whatever the spacing"),
        ddim_loop("linspace", dict(timestep_spacing="linspace"),
                  note="step() uses prev_t = t - T // n whatever the spacing (here 999 -> 899, not 888)"),
        ddim_loop("eta_0.5_given_noise", {}, eta=0.5, noise=True,
                  note="eta > 0 with explicit variance_noise (same tensor every step)"),
    ]


def ddim_inverse_loops():
    return [
        ddim_inverse_loop("no_noise", {}, note="diffusers test_full_loop_no_noise"),
        ddim_inverse_loop("v_prediction", dict(prediction_type="v_prediction"), note="diffusers test_full_loop_with_v_prediction"),
        ddim_inverse_loop("sample_prediction_set_alpha_to_one_false", dict(prediction_type="sample", set_alpha_to_one=False),
                          note="with set_alpha_to_one=True the first step has beta_prod_t = 0 and 'sample' "
                               "prediction divides 0/0 -> NaN in diffusers"),
        ddim_inverse_loop("set_alpha_to_one_true_beta_start_0.01", dict(set_alpha_to_one=True, beta_start=0.01),
                          note="diffusers test_full_loop_with_set_alpha_to_one"),
        ddim_inverse_loop("set_alpha_to_one_false_beta_start_0.01", dict(set_alpha_to_one=False, beta_start=0.01),
                          note="diffusers test_full_loop_with_no_set_alpha_to_one"),
        ddim_inverse_loop("set_alpha_to_one_false", dict(set_alpha_to_one=False)),
        ddim_inverse_loop("steps_offset_1", dict(steps_offset=1)),
        ddim_inverse_loop("trailing", dict(timestep_spacing="trailing")),
    ]


# --- DDPM ----------------------------------------------------------------------------------

def ddpm():
    variances = []
    for vt in ("fixed_small", "fixed_large"):
        for n in (None, 50):
            s = DDPMScheduler(**BASE_CONFIG, variance_type=vt)
            if n is not None:
                s.set_timesteps(n)
            for t in (0, 1, 487, 999):
                variances.append(dict(variance_type=vt, num_inference_steps=n, t=t,
                                      prev_t=int(s.previous_timestep(t)),
                                      variance=f32(s._get_variance(t))))

    # step() with zero variance noise: prev_sample == posterior mean.
    orig = ddpm_mod.randn_tensor
    ddpm_mod.randn_tensor = lambda shape, generator=None, device=None, dtype=None, layout=None: torch.zeros(shape, dtype=dtype)
    steps = []
    try:
        # variance_type only changes the (zeroed) noise term, so one variance type suffices.
        for vt in ("fixed_small",):
            for pt in ("epsilon", "v_prediction", "sample"):
                for t in (999, 500, 1):
                    s = DDPMScheduler(**BASE_CONFIG, variance_type=vt, prediction_type=pt)
                    sample = dummy_sample_deter()
                    tt = torch.tensor(t)
                    out = s.step(dummy_model(sample, tt), tt, sample)
                    steps.append(dict(variance_type=vt, prediction_type=pt, t=t, prev_t=t - 1,
                                      prev_sample=f32list(out.prev_sample),
                                      pred_original_sample=f32list(out.pred_original_sample),
                                      prev_sample_abs_sum=float(out.prev_sample.abs().sum().item())))
    finally:
        ddpm_mod.randn_tensor = orig
    return dict(
        config=dict(BASE_CONFIG),
        note=("num_inference_steps null: set_timesteps never called, so previous_timestep(t) = t - 1. "
              "step(): model output = dummy_model(sample, t); randn_tensor patched to zeros so prev_sample is the "
              "posterior mean (clip_sample=True applies to pred_original_sample)."),
        variances=variances, steps_zero_noise=steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.set_num_threads(1)
    ddim_ts, inverse_ts, ddpm_ts = timesteps()
    data = dict(
        generator="scripts/reference/make_scheduler_references.py",
        versions=dict(diffusers=diffusers.__version__, torch=torch.__version__, numpy=np.__version__,
                      python=sys.version.split()[0]),
        conventions=dict(
            float_values="float32 values written as Python floats (exact); decode as Double, convert to Float",
            sample_layout="dummy_sample_deter: torch.arange(768).reshape(3,8,8,4) / 768, permute(3,0,1,2) -> "
                          "(4,3,8,8); flat lists are the logical C order of the (4,3,8,8) tensor",
            model="dummy_model(x, t) = x * t / (t + 1) with t cast to float32",
            loop_base_config=BASE_CONFIG,
            ddim_loop="scheduler.set_timesteps(10); for t in scheduler.timesteps: "
                      "sample = scheduler.step(model(sample, t), t, sample, eta).prev_sample",
            ddim_inverse_loop="scheduler.set_timesteps(10); for t in scheduler.timesteps (ascending): "
                              "sample = scheduler.step(model(sample, t), t, sample).prev_sample",
            abs_sum="torch.sum(torch.abs(sample)).item() (float32 reduction), as diffusers' test_full_loop_* check",
        ),
        schedules=schedules(),
        timesteps=ddim_ts,
        inverse_timesteps=inverse_ts,
        ddpm_timesteps=ddpm_ts,
        ddim_loops=ddim_loops(),
        ddim_inverse_loops=ddim_inverse_loops(),
        ddpm=ddpm(),
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    for rec in data["ddim_loops"] + data["ddim_inverse_loops"]:
        print(f"{rec['scheduler']:22s} {rec['name']:40s} sum={rec['abs_sum']:.4f} mean={rec['abs_mean']:.6f}")


if __name__ == "__main__":
    main()
