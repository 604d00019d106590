r"""The merge tree of a β sweep: which clusters of data points join at which β, and every point's label.

At each converged β of a sweep the tiles' decoder outputs ψ_a group into
distinct fixed points (:func:`vaefp_jax.clusters.group_fixed_points`). A data
point belongs to the fixed point of its most probable tile,
argmax_a [log π_a − ‖x_i − ψ_a‖²/2β] (the mode of its tile posterior, eq. 14).
That gives one partition of the points per β, but partitions read off
independently at neighbouring β need not be nested (a boundary point can change
sides). A tree needs nested partitions, so the levels are built from the
coarsest (largest β) down:

* each group at the finer level takes as parent the coarser cluster that holds
  most of its points (majority);
* a point whose group's parent is not its own coarser cluster is put in the
  nearest (to its group's fixed point in data space) group of its own cluster;
* a coarser cluster that no finer group chose stays whole.

So every cluster at a level lies inside one cluster of the next level up and
the number of clusters never increases with β. Between consecutive levels the
clusters that join are a :class:`Merge` at a height β_c inside the bracket
(refined beyond the sweep's spacing where the caller supplies it, else the
geometric midpoint). The tree is also a SciPy linkage matrix over the n points
(`scipy.cluster.hierarchy`): points that share a cluster at the lowest level
join at that level's β (they merged at or below it), and if the highest level
still has several clusters they are joined at its β with ``complete = False``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vaefp_jax.clusters import group_fixed_points

__all__ = ["Merge", "MergeTree", "build_tree", "most_probable_tile", "nested_levels", "point_groups"]


def most_probable_tile(x, psi, beta: float, log_prior, chunk: int = 4096) -> np.ndarray:
    """(n,) argmax_a [log π_a − ‖x_i − ψ_a‖²/2β] for ``x`` (n, d), ``psi`` (K, d), ``log_prior`` (K,)."""
    x, psi = np.asarray(x, np.float64), np.asarray(psi, np.float64)
    lp = np.asarray(log_prior, np.float64)
    sq = np.sum(psi * psi, axis=1)
    out = np.empty(x.shape[0], np.int64)
    for lo in range(0, x.shape[0], chunk):
        blk = x[lo:lo + chunk]
        d2 = np.sum(blk * blk, axis=1)[:, None] + sq[None, :] - 2.0 * blk @ psi.T
        out[lo:lo + chunk] = np.argmax(lp[None, :] - d2 / (2.0 * beta), axis=1)
    return out


def point_groups(x, psi, beta: float, log_prior, merge_tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,) in 0..G−1, centres (G, d)): the distinct fixed point of each point's most
    probable tile, and each group's location (mean ψ_a of its tiles); groups owning no point are dropped."""
    psi = np.asarray(psi, np.float64)
    groups = group_fixed_points(psi, merge_tol)
    raw = groups[most_probable_tile(x, psi, beta, log_prior)]
    used, labels = np.unique(raw, return_inverse=True)
    centres = np.stack([psi[groups == g].mean(axis=0) for g in used])
    return labels, centres


def nested_levels(x, groups: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(L, n) nested labels from per-level :func:`point_groups` output, levels in ascending β.

    See the module docstring: the top level is taken as is; each lower level is
    made a refinement of the one above it by majority parents."""
    x = np.asarray(x, np.float64)
    L, n = len(groups), x.shape[0]
    out = np.empty((L, n), np.int64)
    out[-1] = groups[-1][0]
    for lev in range(L - 2, -1, -1):
        raw, centres = groups[lev]
        upper = out[lev + 1]
        table = np.zeros((raw.max() + 1, upper.max() + 1), np.int64)
        np.add.at(table, (raw, upper), 1)
        parent = np.argmax(table, axis=1)               # (G,) majority parent of each group
        keys = np.where(parent[raw] == upper, raw, -1)
        has_child = np.zeros(upper.max() + 1, bool)
        has_child[parent] = True
        keys = np.where((keys < 0) & ~has_child[upper], raw.max() + 1 + upper, keys)   # a cluster kept whole
        stray = np.nonzero(keys < 0)[0]
        if stray.size:   # nearest group of the point's own cluster
            d2 = np.sum((x[stray, None, :] - centres[None, :, :]) ** 2, axis=-1)
            d2 = np.where(parent[None, :] == upper[stray, None], d2, np.inf)
            keys[stray] = np.argmin(d2, axis=1)
        out[lev] = np.unique(keys, return_inverse=True)[1]
    return out


@dataclasses.dataclass(frozen=True)
class Merge:
    """Clusters that join between two consecutive levels.

    ``beta_low``: the last level at which they are apart; ``beta_high``: the first
    at which they are one; ``height``: the β_c of the merge (refined when
    ``refined``, else √(β_low β_high)); ``children``: the node ids (SciPy
    numbering: points 0..n−1, then n + row of the linkage) that join; ``node``:
    the id of the merged cluster; ``size``: its number of points."""

    beta_low: float
    beta_high: float
    height: float
    refined: bool
    children: tuple[int, ...]
    node: int
    size: int


@dataclasses.dataclass(frozen=True, eq=False)
class MergeTree:
    """Nested clusterings of n points over L levels (ascending β) and their merges.

    Attributes:
      beta: (L,) the β of each level.
      labels: (L, n) the cluster (0..counts[l]−1) of every point at each level.
      merges: the :class:`Merge` events between levels, in ascending β.
      linkage: (n−1, 4) SciPy linkage matrix [child, child, height β, size].
      complete: whether the highest level is one cluster.
    """

    beta: np.ndarray
    labels: np.ndarray
    merges: tuple[Merge, ...]
    linkage: np.ndarray
    complete: bool

    @property
    def counts(self) -> np.ndarray:
        """(L,) clusters at each level; never increasing with β."""
        return self.labels.max(axis=1) + 1

    def level(self, beta: float | None = None, num_clusters: int | None = None) -> int:
        """The level in force at ``beta`` (the largest level β ≤ ``beta``), or the level whose
        number of clusters is closest to ``num_clusters`` (ties: the coarser one)."""
        if (beta is None) == (num_clusters is None):
            raise ValueError("give exactly one of beta and num_clusters")
        if beta is not None:
            if not beta >= self.beta[0]:
                raise ValueError(f"β = {beta:g} is below the lowest level {self.beta[0]:g}")
            return int(np.searchsorted(self.beta, beta, side="right") - 1)
        assert num_clusters is not None   # exactly one of the two is given
        if int(num_clusters) < 1:
            raise ValueError(f"num_clusters must be ≥ 1, got {num_clusters}")
        gap = np.abs(self.counts - int(num_clusters))
        return int(np.nonzero(gap == gap.min())[0][-1])

    def labels_at(self, beta: float | None = None, num_clusters: int | None = None) -> np.ndarray:
        """(n,) cluster labels at a β or a number of clusters (see :meth:`level`)."""
        return self.labels[self.level(beta, num_clusters)]

    def __repr__(self):
        return (f"MergeTree({self.labels.shape[1]} points, {len(self.beta)} levels, clusters "
                f"{int(self.counts[0])} → {int(self.counts[-1])}, {len(self.merges)} merges)")


def build_tree(beta, labels, heights: dict[int, float] | None = None) -> MergeTree:
    """The :class:`MergeTree` of nested ``labels`` (L, n) at levels ``beta`` (L,) non-decreasing
    (two levels may be read at the same β: the reduced tree reads a level whose successor split
    on arrival at that split's own β).

    ``heights`` maps a level index l to a refined β_c of the merges between levels
    l and l+1 (it must lie in [β_l, β_{l+1}]); other brackets use their geometric midpoint.
    """
    beta = np.asarray(beta, np.float64)
    labels = np.asarray(labels, np.int64)
    L, n = labels.shape
    if L < 1 or beta.shape != (L,) or np.any(np.diff(beta) < 0):
        raise ValueError("need L ≥ 1 levels at non-decreasing β")
    heights = heights or {}
    rows, size = [], list(np.ones(n, np.int64))

    def join(ids, h):
        cur = ids[0]
        for other in ids[1:]:
            rows.append([cur, other, h, size[cur] + size[other]])
            size.append(size[cur] + size[other])
            cur = n + len(rows) - 1
        return cur

    node = {c: join(list(np.nonzero(labels[0] == c)[0]), beta[0]) for c in range(labels[0].max() + 1)}
    merges = []
    for lev in range(L - 1):
        lo, hi = beta[lev], beta[lev + 1]
        h = heights.get(lev)
        refined = h is not None
        if refined and not (lo <= h <= hi):
            raise ValueError(f"refined β_c {h:g} of level {lev} lies outside its bracket [{lo:g}, {hi:g}]")
        h = float(h) if h is not None else float(np.sqrt(lo * hi))   # h is not None: refined
        upper = {}
        for c in range(labels[lev + 1].max() + 1):
            kids = np.unique(labels[lev][labels[lev + 1] == c])
            ids = [node[k] for k in kids]
            upper[c] = join(ids, h)
            if len(ids) > 1:
                merges.append(Merge(float(lo), float(hi), h, refined, tuple(int(i) for i in ids), int(upper[c]),
                                    int(size[upper[c]])))
        node = upper
    complete = len(node) == 1
    join(sorted(node.values()), beta[-1])
    linkage = np.asarray(rows, np.float64).reshape(-1, 4)
    return MergeTree(beta=beta, labels=labels, merges=tuple(merges), linkage=linkage, complete=complete)
