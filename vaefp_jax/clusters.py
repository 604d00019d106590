"""Counting distinct fixed points: groups of tiles whose ψ_a coincide."""

from __future__ import annotations

import numpy as np

__all__ = ["group_fixed_points", "count_distinct", "default_merge_tol"]


def default_merge_tol(x) -> float:
    """2 % of the data's RMS spread sqrt(tr Cov): merged fixed points coincide
    to solver precision, far below this; distinct ones sit ≳ a cluster apart."""
    x = np.asarray(x, np.float64)
    spread = float(np.sqrt(np.trace(np.atleast_2d(np.cov(x.T, bias=True))))) if len(x) > 1 else 0.0
    return 0.02 * spread if spread > 0 else 1e-6


def group_fixed_points(psi, tol: float) -> np.ndarray:
    """Labels (K,) grouping the rows of ``psi`` (K, d) that lie within ``tol`` of a
    group's first member (greedy leader clustering; exact when groups are
    tighter than ``tol`` and further than 2·``tol`` apart)."""
    psi = np.asarray(psi, np.float64)
    labels = np.full(psi.shape[0], -1)
    label = 0
    for a in range(psi.shape[0]):
        if labels[a] >= 0:
            continue
        free = labels < 0
        near = free & (np.sum((psi - psi[a]) ** 2, axis=1) <= tol * tol)
        labels[near] = label
        label += 1
    return labels


def count_distinct(psi, tol: float) -> np.ndarray | int:
    """Number of distinct fixed points in ``psi`` (K, d), or per row of (B, K, d)."""
    psi = np.asarray(psi)
    if psi.ndim == 3:
        return np.array([count_distinct(p, tol) for p in psi])
    return int(group_fixed_points(psi, tol).max() + 1) if psi.shape[0] else 0
