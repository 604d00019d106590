r"""The β range of a data set: where its fixed points start to merge and where the last merge is.

Two exact landmarks of eq. (14)–(15) set the range (Section 3 of the paper):

* **high end.** The collapsed configuration ψ_a = x̄ is a fixed point at every β
  and is stable exactly when β > λ_max, the largest eigenvalue of the data's
  (1/n) covariance (Proposition 5; its Jacobian has spectral radius λ_max/β).
  Above λ_max there is one cluster; the last merge of a cooling sweep sits at
  λ_max. The range ends a margin (default ×2) above it.
* **low end.** Two points a distance δ apart, alone, are a blob of covariance
  λ_max = δ²/4: their fixed points merge at β = δ²/4. The range starts a margin
  (default ÷2) below δ_q²/4, where δ_q is a low quantile (default 10 %) of the
  positive nearest-neighbour distances, so that most points still own their
  fixed point at the first β. (With fewer tiles than points, the first level
  has at most K fixed points whatever β.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["covariance_lambda_max", "default_beta_range", "nearest_neighbour_distances"]


def covariance_lambda_max(x) -> float:
    """λ_max of the (1/n) sample covariance of ``x`` (n, d): the β of the last merge."""
    x = np.asarray(x, np.float64)
    if x.shape[0] < 2:
        return 0.0
    cov = np.atleast_2d(np.cov(x.T, bias=True))
    return float(np.linalg.eigvalsh(cov)[-1])


def nearest_neighbour_distances(x, chunk: int = 1024) -> np.ndarray:
    """(n,) distance from each point of ``x`` (n, d) to its nearest other point
    (0 for duplicated points), in blocks of ``chunk`` rows (O(chunk · n) memory)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    sq = np.sum(x * x, axis=1)
    out = np.empty(n)
    for lo in range(0, n, chunk):
        blk = x[lo:lo + chunk]
        d2 = sq[lo:lo + chunk, None] + sq[None, :] - 2.0 * blk @ x.T
        d2[np.arange(len(blk)), lo + np.arange(len(blk))] = np.inf
        out[lo:lo + chunk] = np.sqrt(np.maximum(np.min(d2, axis=1), 0.0))
    return out


def default_beta_range(x, *, quantile: float = 0.1, low_margin: float = 2.0,
                       high_margin: float = 2.0) -> tuple[float, float]:
    """(β_min, β_max) for a sweep of ``x`` (n, d), from the data alone.

    β_min = δ_q² / (4 · ``low_margin``) with δ_q the ``quantile`` of the positive
    nearest-neighbour distances; β_max = ``high_margin`` · λ_max(Cov). Raises
    ``ValueError`` when the data has fewer than two distinct points.
    """
    x = np.asarray(x, np.float64)
    if not (0.0 < quantile < 1.0):
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if low_margin < 1.0 or high_margin <= 1.0:
        raise ValueError(f"margins must be ≥ 1 (low) and > 1 (high), got {low_margin}, {high_margin}")
    lam = covariance_lambda_max(x)
    nn = nearest_neighbour_distances(x) if x.shape[0] > 1 else np.zeros(1)
    positive = nn[nn > 0]
    if lam <= 0.0 or positive.size == 0:
        raise ValueError("the data has fewer than two distinct points: there is no scale to analyse")
    delta = float(np.quantile(positive, quantile))
    beta_min = delta * delta / (4.0 * low_margin)
    beta_max = high_margin * lam
    if beta_min >= beta_max:  # only when nearest neighbours are as far apart as the data is wide
        beta_min = beta_max / 1e3
    return beta_min, beta_max
