"""Loads Swift-saved networks into the PyTorch twin and compares outputs.

Usage: python3 check_equivalence.py DIR
DIR holds unet/ and adapter/ model folders (config.json + model.safetensors), inputs.safetensors
(x, timesteps, tokens, mask, pooled) and swift_outputs.safetensors (unet, adapter). Prints JSON
with the maximum absolute difference per network (and the largest output magnitude, `*_scale`).
The same forward passes then run on PyTorch's meta device, where a tensor the twin makes on the
CPU inside a forward pass fails as it would on a GPU (`meta_device_ok`: 1). Exit status 2 when a
load or a pass fails.

Video: when inputs.safetensors also holds `frames` (a one-element int64 tensor F), x is
[B*F, C, H, W] (the F frames of each video adjacent), both networks are inflated before loading
(so the checkpoints must hold the `*.temporal.*` parameters) and run with `frames=F`; the U-Net
uses sparse-causal self-attention (the Swift default, `VideoLayout(frames:)`), and per-frame
self-attention too when swift_outputs.safetensors holds `unet_per_frame`.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contextdiff_torch import ContextAdapter, UNet, load_safetensors  # noqa: E402


def load(cls, folder, inflate):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = cls(cfg)
    if inflate:
        model.inflate()
    model.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")), strict=True)
    return model.eval()


def outputs(d, inputs, frames, device):
    """Each network's outputs on `device` (the per-frame U-Net too, for a video with Swift's
    `unet_per_frame`), networks and inputs moved there."""
    video = frames is not None
    x = {k: v.to(device) for k, v in inputs.items()}
    mask = x["mask"].bool()
    out = {}
    with torch.no_grad():
        if os.path.isdir(os.path.join(d, "unet")):
            unet = load(UNet, os.path.join(d, "unet"), video).to(device)
            out["unet"] = unet(x["x"], x["timesteps"], x["tokens"], mask, x["pooled"], frames=frames)
            if video:
                out["unet_per_frame"] = unet(x["x"], x["timesteps"], x["tokens"], mask, x["pooled"],
                                             frames=frames, frame_attention="per-frame")
        if os.path.isdir(os.path.join(d, "adapter")):
            adapter = load(ContextAdapter, os.path.join(d, "adapter"), video).to(device)
            out["adapter"] = adapter(x["x"], x["timesteps"], x["tokens"], mask, frames=frames)
    return out


def main(d):
    torch.set_num_threads(1)
    inputs = load_safetensors(os.path.join(d, "inputs.safetensors"))
    swift = load_safetensors(os.path.join(d, "swift_outputs.safetensors"))
    frames = int(inputs.pop("frames").item()) if "frames" in inputs else None
    result = {}
    for name, out in outputs(d, inputs, frames, "cpu").items():
        if name in swift:
            result[name] = (out - swift[name]).abs().max().item()
            result[f"{name}_scale"] = out.abs().max().item()
    # The same forward passes on PyTorch's meta device (shapes only, no arithmetic): a tensor
    # the twin makes on the CPU inside a forward pass fails here as it would on a GPU.
    outputs(d, inputs, frames, "meta")
    result["meta_device_ok"] = 1.0
    print(json.dumps(result))

if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # report load errors as a clear message and exit status
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
