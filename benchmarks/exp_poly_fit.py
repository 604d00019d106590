"""The float32 exponential's polynomial in ``vaefp_jax/native/shifted_map.cc``, re-derived.

e^r ≈ 1 + r + r² q(r) on |r| ≤ ln2/2 (the Cody–Waite range), q a cubic fitted for the least
maximum *relative* error |p(r) − e^r| / e^r by iteratively reweighted least squares (Lawson's
algorithm: weights grow where the error is largest, so the fit tends to the minimax one). The
form 1 + r + r² q keeps the two leading terms exact, so the error near r = 0 stays relative.
Prints q's coefficients, highest first (the order of the Horner scheme in the kernel), and the
maximum relative error in exact (float64) arithmetic and in float32 Horner evaluation with
one rounding per multiply-add. Run: ``python benchmarks/exp_poly_fit.py`` (NumPy only, ~1 s).
"""

import numpy as np


def fit(points: int = 20001, iterations: int = 200) -> tuple[np.ndarray, float]:
    half = np.log(2.0) / 2
    r = np.cos(np.linspace(0.0, np.pi, points)) * half       # Chebyshev-spaced: dense at the ends
    r = r[r != 0.0]
    target = (np.expm1(r) - r) / r**2                         # what q must approximate
    basis = np.vander(r, 4, increasing=True)
    rel = r**2 / np.exp(r)                                   # q's error times this is p's relative error
    w = np.ones_like(r)
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(basis * (rel * w)[:, None], target * rel * w, rcond=None)
        err = rel * (basis @ coef - target)
        w = w * np.sqrt(np.abs(err) / np.abs(err).max()) + 1e-12
        w /= w.max()
    return coef[::-1], float(np.abs(err).max())


def float32_error(q_high_first: np.ndarray, points: int = 200001) -> float:
    """Max relative error of the kernel's float32 evaluation: Horner in FMAs, then
    fma(q, r², r) + 1 (np.float32 arithmetic with float64 FMAs rounded once is exact here)."""
    half = np.float32(np.log(2.0) / 2)
    r = np.linspace(-half, half, points, dtype=np.float32)
    c = q_high_first.astype(np.float32)
    f32 = lambda v: np.asarray(v, np.float64).astype(np.float32)
    p = np.full_like(r, c[0])
    for ck in c[1:]:
        p = f32(p.astype(np.float64) * r + ck)
    rr = f32(r.astype(np.float64) * r)
    p = f32(p.astype(np.float64) * rr + r)
    p = f32(p.astype(np.float64) + 1.0)
    exact = np.exp(r.astype(np.float64))
    return float(np.max(np.abs(p.astype(np.float64) - exact) / exact))


if __name__ == "__main__":
    q, err = fit()
    print("q (highest first):", ", ".join(f"{v:.16g}" for v in q))
    print(f"max relative error, exact arithmetic: {err:.3g}")
    print(f"max relative error, float32 evaluation: {float32_error(q):.3g}")
