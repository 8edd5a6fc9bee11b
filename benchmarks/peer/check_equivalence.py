"""Loads Swift-saved networks into the PyTorch twin and compares outputs.

Usage: python3 check_equivalence.py DIR
DIR holds unet/ and adapter/ model folders (config.json + model.safetensors), inputs.safetensors
(x, timesteps, tokens, mask, pooled) and swift_outputs.safetensors (unet, adapter). Prints JSON
with the maximum absolute difference per network. Exit status 2 when a load fails.
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contextdiff_torch import ContextAdapter, UNet, load_safetensors  # noqa: E402


def load(cls, folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = cls(cfg)
    model.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")), strict=True)
    return model.eval()


def main(d):
    torch.set_num_threads(1)
    inputs = load_safetensors(os.path.join(d, "inputs.safetensors"))
    swift = load_safetensors(os.path.join(d, "swift_outputs.safetensors"))
    mask = inputs["mask"].bool()
    result = {}
    with torch.no_grad():
        if os.path.isdir(os.path.join(d, "unet")):
            unet = load(UNet, os.path.join(d, "unet"))
            out = unet(inputs["x"], inputs["timesteps"], inputs["tokens"], mask, inputs["pooled"])
            result["unet"] = (out - swift["unet"]).abs().max().item()
            result["unet_scale"] = out.abs().max().item()
        if os.path.isdir(os.path.join(d, "adapter")):
            adapter = load(ContextAdapter, os.path.join(d, "adapter"))
            out = adapter(inputs["x"], inputs["timesteps"], inputs["tokens"], mask)
            result["adapter"] = (out - swift["adapter"]).abs().max().item()
            result["adapter_scale"] = out.abs().max().item()
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # report load errors as a clear message and exit status
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(2)
