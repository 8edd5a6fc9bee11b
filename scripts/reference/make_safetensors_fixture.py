#!/usr/bin/env python3
"""Reference file for the Swift safetensors codec (Sources/Torch/SafeTensors.swift),
written by Hugging Face's own `safetensors` library.

Setup (Debian, torch from apt python3-torch visible through system site packages):

    /usr/bin/python3.11 -m venv --system-site-packages /tmp/stvenv
    /tmp/stvenv/bin/pip install safetensors
    /tmp/stvenv/bin/python scripts/reference/make_safetensors_fixture.py

Writes, relative to the repository root (override the folder with --out-dir):

  Tests/TorchTests/Fixtures/python_written.safetensors
      the tensors below plus metadata {"format": "pt", "author": "fixture"}, saved by
      safetensors.torch.save_file (which lays tensors out by dtype alignment, not by
      name, so the Swift reader is also checked against a layout it does not produce).
  Tests/TorchTests/Fixtures/python_written.json
      {"metadata": {...}, "tensors": {name: {"dtype", "shape", "values"}}} where
      "values" is the tensor flattened in row-major order, each element as a Python
      float (bool as 0.0 / 1.0). Every value is exactly representable in its dtype
      and in a double, so the Swift test compares with ==.
"""

import argparse
import json
import os

import safetensors
import torch
from safetensors.torch import load_file, save_file

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def tensors():
    return {
        "f32_2x3": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "f16_4": torch.tensor([0.5, -1.25, 2048.0, 65504.0], dtype=torch.float16),
        "bf16_2x2": torch.tensor([[1.0, -2.5], [0.15625, 3.0e38]], dtype=torch.bfloat16),
        "i64_3": torch.tensor([-3, 0, 1 << 40], dtype=torch.int64),
        "f64_scalar": torch.tensor(-0.1, dtype=torch.float64),
        "f32_empty_0x3": torch.zeros(0, 3, dtype=torch.float32),
        "bool_3": torch.tensor([True, False, True]),
        "u8_2": torch.tensor([0, 255], dtype=torch.uint8),
    }


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=os.path.join(root, "Tests", "TorchTests", "Fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    ts = tensors()
    metadata = {"format": "pt", "author": "fixture"}
    st_path = os.path.join(args.out_dir, "python_written.safetensors")
    save_file(ts, st_path, metadata=metadata)

    # Read back with the library itself: the JSON describes what safetensors loads.
    loaded = load_file(st_path)
    expected = {"metadata": metadata, "tensors": {}}
    for name in sorted(loaded):
        t = loaded[name]
        assert torch.equal(t, ts[name]), name
        values = [float(v) for v in t.to(torch.float64).flatten().tolist()]
        expected["tensors"][name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "values": values,
        }
    expected["generator"] = f"safetensors {safetensors.__version__}, torch {torch.__version__}"
    with open(os.path.join(args.out_dir, "python_written.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
