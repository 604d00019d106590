"""Counting distinct fixed points: groups of tiles whose ψ_a coincide."""

from __future__ import annotations

import numpy as np

__all__ = ["adjusted_rand_index", "count_distinct", "default_merge_tol", "group_fixed_points", "rms_spread"]


def rms_spread(x) -> float:
    """The data's RMS spread √tr Cov of ``x`` (n, d), in float64 on the host (0 for one point):
    the length scale that tolerances, noise and units of the phase analysis are relative to."""
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.sum(np.var(x, axis=0)))) if len(x) > 1 else 0.0


def default_merge_tol(x) -> float:
    """2 % of the data's RMS spread sqrt(tr Cov): merged fixed points coincide
    to solver precision, far below this; distinct ones sit ≳ a cluster apart."""
    spread = rms_spread(x)
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


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Hubert and Arabie's adjusted Rand index of two labelings of the same n points.

    ARI = (Σ_ij C(n_ij, 2) − E) / (½ (Σ_i C(a_i, 2) + Σ_j C(b_j, 2)) − E), with
    n_ij the contingency table, a, b its margins and E = Σ C(a_i,2) Σ C(b_j,2) / C(n,2):
    1 for identical partitions, ~0 for independent ones. Labels may be any
    hashable values (strings, integers). Two one-cluster labelings score 1.
    """
    a = np.asarray(labels_true)
    b = np.asarray(labels_pred)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D labelings of equal length, got shapes {a.shape} and {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.float64)
    np.add.at(table, (ia, ib), 1.0)
    pairs = lambda m: np.sum(m * (m - 1.0)) / 2.0
    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), pairs(np.array([a.size]))
    expected = rows * cols / total if total > 0 else 0.0
    maximum = 0.5 * (rows + cols)
    if maximum == expected:  # both labelings trivial (one cluster, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))
