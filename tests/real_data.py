"""The real-data regression suite's definitions (shared by tests/test_real_data.py
and benchmarks/real_data.py): scikit-learn's bundled data sets and the shipped
MNIST subset, standardised, and one cooling phase sweep of each."""

from __future__ import annotations

import time

import numpy as np

import vaefp_jax as vf

REAL_DATA = ("iris", "wine", "breast_cancer", "digits", "mnist40")

# grid side and number of β per data set: small enough for 2 CPU cores
SETTINGS = {"iris": (6, 16), "wine": (6, 16), "breast_cancer": (5, 12), "digits": (5, 12), "mnist40": (5, 12)}
DIGITS_SUBSET = 300


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns to zero mean and unit variance; constant columns (blank MNIST
    pixels) dropped."""
    x = np.asarray(x, np.float64)
    std = x.std(axis=0)
    keep = std > 0
    return (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]


def load(name: str) -> np.ndarray:
    if name == "mnist40":
        return standardise(vf_mnist_images())
    from sklearn import datasets

    if name == "digits":
        x = datasets.load_digits().data
        idx = np.random.default_rng(0).choice(len(x), DIGITS_SUBSET, replace=False)
        return standardise(x[np.sort(idx)])
    loader = {"iris": datasets.load_iris, "wine": datasets.load_wine,
              "breast_cancer": datasets.load_breast_cancer}[name]
    return standardise(loader().data)


def vf_mnist_images() -> np.ndarray:
    from vaefp_jax import mnist

    ex = mnist.load_exemplars()
    return np.asarray(ex.images, np.float64).reshape(len(ex.images), -1)


def analyse(name: str) -> dict:
    """A cooling sweep with derivatives over β in [λ_max/4, 4 λ_max] (log-spaced),
    its critical points and the refined last merge."""
    x = load(name)
    side, num_betas = SETTINGS[name]
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    betas = np.geomspace(lam / 4, 4 * lam, num_betas)
    grid = vf.LatentGrid.uniform(side)
    t0 = time.perf_counter()
    sw = vf.sweep(x, betas, grid, continuation="cooling", throw=False)
    seconds = time.perf_counter() - t0
    peaks = vf.critical_betas(sw, top_k=8, variable="log_beta")
    last = max(peaks, key=lambda p: p.beta) if peaks else None
    # 14 bisections shrink the bracket (one sweep spacing) below 0.1 %
    refined = vf.refine_critical_beta(sw, last, x, grid, iterations=14, spectral="lanczos", spectral_iters=48) \
        if last is not None else float("nan")
    return dict(name=name, x=x, n=x.shape[0], d=x.shape[1], side=side, num_betas=num_betas, lam=lam,
                betas=betas, sweep=sw, seconds=seconds, converged=int(sw.converged.sum()), peaks=peaks,
                last_peak=last.beta if last else float("nan"), refined=refined,
                spacing=float(betas[1] / betas[0]))
