"""Loads Swift-saved networks into the PyTorch twin and compares outputs.

Usage: python3 check_equivalence.py DIR
DIR holds unet/ and adapter/ model folders (config.json + model.safetensors), inputs.safetensors
(x, timesteps, tokens, mask, pooled) and swift_outputs.safetensors (unet, adapter). Prints JSON
with the maximum absolute difference per network (and the largest output magnitude, `*_scale`).
Exit status 2 when a load fails.

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


def main(d):
    torch.set_num_threads(1)
    inputs = load_safetensors(os.path.join(d, "inputs.safetensors"))
    swift = load_safetensors(os.path.join(d, "swift_outputs.safetensors"))
    mask = inputs["mask"].bool()
    frames = int(inputs["frames"].item()) if "frames" in inputs else None
    video = frames is not None
    result = {}
    with torch.no_grad():
        if os.path.isdir(os.path.join(d, "unet")):
            unet = load(UNet, os.path.join(d, "unet"), video)
            out = unet(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, inputs["pooled"], frames=frames)
            result["unet"] = (out - swift["unet"]).abs().max().item()
            result["unet_scale"] = out.abs().max().item()
            if video and "unet_per_frame" in swift:
                out = unet(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, inputs["pooled"],
                           frames=frames, frame_attention="per-frame")
                result["unet_per_frame"] = (out - swift["unet_per_frame"]).abs().max().item()
                result["unet_per_frame_scale"] = out.abs().max().item()
        if os.path.isdir(os.path.join(d, "adapter")):
            adapter = load(ContextAdapter, os.path.join(d, "adapter"), video)
            out = adapter(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, frames=frames)
            result["adapter"] = (out - swift["adapter"]).abs().max().item()
            result["adapter_scale"] = out.abs().max().item()
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # report load errors as a clear message and exit status
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
