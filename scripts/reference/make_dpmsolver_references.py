#!/usr/bin/env python3
"""Reference data for ContextDiff's DPM-Solver++ sampler, produced by diffusers itself
(DPMSolverMultistepScheduler, diffusers 0.27.2).

Setup: `bash scripts/setup-benchmark.sh` (a venv with diffusers 0.27.2 over Debian's torch), then

    ~/.cache/contextdiff/bench-venv/bin/python scripts/reference/make_dpmsolver_references.py

Writes Tests/DiffusionTests/Fixtures/diffusers_dpmsolver.json (override with --out).

Contents (float32 values written as the Python float of the float32, so Float(Double(text))
recovers the bits):

  timesteps  set_timesteps(n): timesteps and sigmas for every spacing, Karras sigmas, several n.
  loops      diffusers' tests/schedulers/test_scheduler_dpm_multi.py full_loop re-created
             (dummy_sample_deter, dummy_model) for orders 1-3, midpoint/heun, epsilon/v/sample,
             Karras, leading/trailing, final sigma zero/sigma_min, thresholding and the SDE
             variant (variance_noise given explicitly: deterministic_noise()).
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from make_scheduler_references import (  # noqa: E402
    deterministic_noise, dummy_model, dummy_sample_deter, f32list, ints, summarize)

import diffusers  # noqa: E402
from diffusers import DPMSolverMultistepScheduler  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "Tests", "DiffusionTests", "Fixtures", "diffusers_dpmsolver.json")
BASE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")


def timesteps():
    out = []
    for spacing in ("linspace", "leading", "trailing"):
        for karras in (False, True):
            for n in (1, 2, 3, 7, 10, 15, 20, 25, 50, 100, 333, 999, 1000):
                if karras and n > 100:
                    continue
                s = DPMSolverMultistepScheduler(**BASE, timestep_spacing=spacing, use_karras_sigmas=karras)
                s.set_timesteps(n)
                # sigmas only where they are few (the file stays small); timesteps always.
                out.append(dict(spacing=spacing, use_karras_sigmas=karras, num_inference_steps=n,
                                timesteps=ints(s.timesteps), sigmas=f32list(s.sigmas) if n <= 100 else None))
    for offset in (1,):
        s = DPMSolverMultistepScheduler(**BASE, timestep_spacing="leading", steps_offset=offset)
        s.set_timesteps(10)
        out.append(dict(spacing="leading", steps_offset=offset, use_karras_sigmas=False, num_inference_steps=10,
                        timesteps=ints(s.timesteps), sigmas=f32list(s.sigmas)))
    return out


def loop(name, overrides, n=10, noise=False):
    config = dict(BASE)
    config.update(overrides)
    s = DPMSolverMultistepScheduler(**config)
    s.set_timesteps(n)
    sample = dummy_sample_deter()
    steps = []
    for t in s.timesteps:
        residual = dummy_model(sample, t)
        kwargs = dict(variance_noise=deterministic_noise()) if noise else {}
        sample = s.step(residual, t, sample, **kwargs).prev_sample
        steps.append(dict(t=int(t), prev_sample_abs_sum=float(torch.abs(sample).sum().item())))
    return dict(name=name, config={k: (v if not isinstance(v, float) or v == v else None) for k, v in sorted(config.items())},
                num_inference_steps=n, noise=noise, timesteps=ints(s.timesteps), sigmas=f32list(s.sigmas),
                steps=steps, final_sample=f32list(sample), **summarize(sample))


def loops():
    return [
        loop("default_2m", {}),
        loop("default_2m_20", {}, n=20),
        loop("sigma_min_25", dict(final_sigmas_type="sigma_min"), n=25),
        loop("order_1", dict(solver_order=1)),
        loop("order_3", dict(solver_order=3)),
        loop("order_3_25", dict(solver_order=3, final_sigmas_type="sigma_min"), n=25),
        loop("heun", dict(solver_type="heun")),
        loop("v_prediction", dict(prediction_type="v_prediction")),
        loop("sample_prediction", dict(prediction_type="sample")),
        loop("karras", dict(use_karras_sigmas=True)),
        loop("karras_20", dict(use_karras_sigmas=True), n=20),
        loop("leading_offset_1", dict(timestep_spacing="leading", steps_offset=1)),
        loop("trailing", dict(timestep_spacing="trailing")),
        loop("no_lower_order_final_sigma_min", dict(lower_order_final=False, final_sigmas_type="sigma_min")),
        loop("thresholding", dict(thresholding=True, sample_max_value=1.5, prediction_type="sample")),
        loop("scaled_linear_15", dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), n=15),
        loop("sde_midpoint", dict(algorithm_type="sde-dpmsolver++"), noise=True),
        loop("sde_heun", dict(algorithm_type="sde-dpmsolver++", solver_type="heun"), noise=True),
        loop("sde_karras_20", dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True), n=20, noise=True),
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    data = dict(
        meta=dict(diffusers=diffusers.__version__, torch=torch.__version__,
                  script="scripts/reference/make_dpmsolver_references.py",
                  model="dummy_model(x, t) = x * t / (t + 1)", sample="dummy_sample_deter (4,3,8,8)",
                  noise="deterministic_noise(): ((arange(768) % 7 - 3) / 4), (4,3,8,8)"),
        timesteps=timesteps(),
        loops=loops(),
    )
    with open(args.out, "w") as f:
        json.dump(data, f, separators=(",", ":"), allow_nan=False)
    print(f"wrote {args.out}: {len(data['timesteps'])} timestep sets, {len(data['loops'])} loops", file=sys.stderr)


if __name__ == "__main__":
    main()
