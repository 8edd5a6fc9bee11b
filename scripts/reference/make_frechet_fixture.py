#!/usr/bin/env python3
"""Reference values for the Swift Fréchet distance (Sources/Evaluation/FrechetDistance.swift),
computed exactly as pytorch-fid does (`pytorch_fid.fid_score.calculate_frechet_distance`,
statistics from `calculate_activation_statistics`): mean and `np.cov(rowvar=False)` of each
feature set, then ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)) with scipy's
general matrix square root (and pytorch-fid's eps offset fallback, never needed here).

Setup (Debian's interpreter has numpy; scipy from PyPI):

    /usr/bin/python3.11 -m venv --system-site-packages /tmp/fvenv
    /tmp/fvenv/bin/pip install "scipy<1.12" "numpy<2"
    /tmp/fvenv/bin/python scripts/reference/make_frechet_fixture.py

Writes Tests/EvaluationTests/Fixtures/frechet.json (override with --out):

    {"generator": ..., "cases": [{"name", "a": [[...], ...], "b": [[...], ...], "fd": float}]}

Every feature value is a float64 written with Python's shortest round-trip repr, so the Swift
test reads exactly the same numbers.
"""

import argparse
import json
import os

import numpy as np
import scipy
from scipy import linalg


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid 0.3.0's calculate_frechet_distance, verbatim in substance."""
    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)
    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError("Imaginary component {}".format(np.max(np.abs(covmean.imag))))
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def statistics(act):
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--out", default=os.path.join(root, "Tests", "EvaluationTests", "Fixtures", "frechet.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(20240611)
    d = 16
    cases = []

    def add(name, a, b):
        fd = calculate_frechet_distance(*statistics(a), *statistics(b))
        cases.append({"name": name, "a": a.tolist(), "b": b.tolist(), "fd": fd})

    # Isotropic Gaussians, shifted means.
    add("isotropic-shifted", rng.normal(size=(64, d)), rng.normal(loc=0.5, size=(80, d)))
    # Correlated features (random linear maps), different scales: the cross term matters.
    m1, m2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    add("correlated", rng.normal(size=(96, d)) @ m1, rng.normal(size=(72, d)) @ (0.5 * m2) + 1.0)
    # Nearly the same distribution (a small distance: checks the cancellation of large traces).
    m3 = rng.normal(size=(d, d))
    add("close", rng.normal(size=(120, d)) @ m3 + 3.0, rng.normal(size=(120, d)) @ m3 + 3.05)
    # Anisotropic, few vectors per dimension (N = 24 > D = 16), non-negative like post-SiLU features.
    scales = np.exp(rng.normal(size=d))
    add("anisotropic-few", np.abs(rng.normal(size=(24, d)) * scales), np.abs(rng.normal(size=(30, d)) * scales[::-1]))

    out = {
        "generator": "scripts/reference/make_frechet_fixture.py (numpy %s, scipy %s; pytorch-fid formula)"
        % (np.__version__, scipy.__version__),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f)
        f.write("\n")
    for c in cases:
        print("%-18s fd = %.12g" % (c["name"], c["fd"]))


if __name__ == "__main__":
    main()
