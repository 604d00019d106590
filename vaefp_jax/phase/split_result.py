"""The result of the reduced phase analysis (:func:`vaefp_jax.phase.split_analysis.split_analysis`):
the split tree, its levels, the labels of every point at every level, the cross-check sweep.

:class:`SplitResult` holds NumPy arrays only, so that :meth:`SplitResult.save` and
:meth:`SplitResult.load` round-trip it exactly. Its ``tree`` is a
:class:`~vaefp_jax.phase.tree.MergeTree` (levels in ascending β, SciPy linkage with the
exact β_c as merge heights), the same object the tile analysis gives.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vaefp_jax.clusters import adjusted_rand_index
from vaefp_jax.phase.result import save_labels_and_figures, source_rows, write_csv
from vaefp_jax.phase.tree import Merge, MergeTree
from vaefp_jax.runs import atomic_path, begin_run, read_run, write_record

__all__ = ["LevelRow", "SplitResult", "SplitRow"]

# |λ_max(C_a)/β_c − 1| under which a split's β_c counts as exact (a root of g_a located by
# Brent's method to ~1e-11); a split found unstable on arrival (a first-order cascade: the
# cluster was already unstable where the branch was first solved) has a larger condition.
EXACT = 1e-8


@dataclasses.dataclass(frozen=True)
class SplitRow:
    """One split: cluster ``parent`` (node id) into ``child_a``, ``child_b`` at ``beta_c``, with
    the children's masses just below; ``condition`` λ_max(C_a)/β_c − 1 on the branch at β_c (≤ 0
    and ~1e-12 for an exact root; > 0 for a split on arrival); ``exact``: |condition| ≤ 1e-8;
    ``clusters``: the number of clusters below it; ``beta_upper``: β_c itself for an exact root,
    else the previous split's β_c (a split on arrival has its onset in (beta_c, beta_upper]: the
    cluster was already unstable where the new branch was first solved, a first-order cascade);
    ``u`` and ``du_above``: u and u′ = du/dβ at β_c on the parent's branch (by implicit
    differentiation; NaN without the cross-check); u is continuous through the split, u′ jumps
    (the cross-check sweep shows it below)."""

    beta_c: float
    parent: int
    child_a: int
    child_b: int
    mass_a: float
    mass_b: float
    condition: float
    exact: bool
    clusters: int
    beta_upper: float
    u: float = float("nan")
    du_above: float = float("nan")


@dataclasses.dataclass(frozen=True)
class LevelRow:
    """One level of the tree: ``clusters`` clusters between ``beta_low`` and ``beta_high`` (inf for
    the root), ``width`` = ln(β_high/β_low), ``beta_read`` where its fixed point and labels are
    read, ``significant`` its clusters holding at least ``min_mass`` of the points, and the
    adjusted Rand index ``ari`` of its labels (None without true labels)."""

    clusters: int
    beta_low: float
    beta_high: float
    width: float
    beta_read: float
    significant: int
    ari: float | None


@dataclasses.dataclass(frozen=True, eq=False)
class SplitResult:
    """The split tree of n points (reduced model, Prop. 5).

    Attributes:
      x: (n, d) the data analysed (after standardisation, if any).
      splits, levels: the :class:`SplitRow` (descending β) and :class:`LevelRow` (level k has k + 1
        clusters) tables.
      level_psi: (Σ_k (k+1), d) the fixed points of every level, stacked level after level;
        ``level_log_mass`` and ``level_nodes`` (same rows) their log masses and node ids.
      directions: (S, d) each split's direction (top eigenvector of C_a).
      tree: the :class:`~vaefp_jax.phase.tree.MergeTree` (levels in ascending β).
      sweep_beta, sweep_u, sweep_du, sweep_d2u, sweep_level: (G,) the cross-check: u, u′, u″ by
        implicit differentiation on a β grid inside every level's interval.
      true_labels: (n,) the labels given to score the levels, or None.
      min_mass: mass (fraction of the points) of a significant cluster.
      record: what produced the run.
    """

    x: np.ndarray
    splits: tuple[SplitRow, ...]
    levels: tuple[LevelRow, ...]
    level_psi: np.ndarray
    level_log_mass: np.ndarray
    level_nodes: np.ndarray
    directions: np.ndarray
    tree: MergeTree
    sweep_beta: np.ndarray
    sweep_u: np.ndarray
    sweep_du: np.ndarray
    sweep_d2u: np.ndarray
    sweep_level: np.ndarray
    true_labels: np.ndarray | None
    min_mass: float
    record: dict

    # -- reading ------------------------------------------------------------------------------

    @property
    def source_rows(self) -> np.ndarray:
        """(n,) the row of the input of every analysed point (see PhaseResult.source_rows)."""
        return source_rows(self.record, self.x.shape[0])

    def psi(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """(ψ (k+1, d), log γ (k+1,)) of ``level``."""
        start = level * (level + 1) // 2
        return self.level_psi[start:start + level + 1], self.level_log_mass[start:start + level + 1]

    def beta_c_gradient(self, split: int) -> np.ndarray:
        """(n, d) dβ_c/dx of split ``split`` (0: the first), by implicit differentiation of
        λ_max(C_a(z*(β_c, x), x)) = β_c through the parent's branch
        (:func:`vaefp_jax.phase.reduced_implicit.critical_beta_gradient`). Needs the levels read at
        their low-β end (``read="low"``, the default), where the parent's branch is solved at β_c,
        and an exact split (an on-arrival split has no root to differentiate)."""
        import jax.numpy as jnp

        from vaefp_jax.phase.reduced_implicit import critical_beta_gradient

        s = self.splits[split]
        if not s.exact:
            raise ValueError(f"split {split} is a split on arrival (condition {s.condition:.2g}): "
                             "no root to differentiate")
        if self.record.get("read", "low") != "low":
            raise ValueError("dβ_c/dx needs the levels read at their low-β end (read='low')")
        psi, lm = self.psi(split)
        start = split * (split + 1) // 2
        cluster = int(np.nonzero(self.level_nodes[start:start + split + 1] == s.parent)[0][0])
        mean = self.x.mean(axis=0)
        grad = critical_beta_gradient(jnp.asarray(self.x - mean), jnp.asarray(psi - mean), jnp.asarray(lm),
                                      self.levels[split].beta_read, cluster)
        g = np.asarray(grad, np.float64)
        return g - g.mean(axis=0)   # through the centring x − x̄ (β_c is translation invariant: Σ_i ∂β_c/∂x_i = 0)

    def labels(self, level: int) -> np.ndarray:
        """(n,) the cluster (0..k) of every point at ``level`` (k + 1 clusters); nested across levels."""
        return self.tree.labels[len(self.levels) - 1 - level]

    @property
    def persistent_level(self) -> int:
        """The most persistent level: the widest interval in ln β among the levels with ≥ 2
        clusters and a split below them (the root's and the last level's intervals are open)."""
        inner = list(range(1, len(self.levels) - 1))
        return max(inner, key=lambda k: self.levels[k].width) if inner else len(self.levels) - 1

    def level_with(self, clusters: int) -> int:
        """The coarsest level with ``clusters`` significant clusters (mass ≥ ``min_mass``); if none
        has exactly that many, the level with that many clusters in all (the finest if fewer)."""
        for k, lev in enumerate(self.levels):
            if lev.significant == clusters:
                return k
        return min(max(int(clusters), 1), len(self.levels)) - 1

    def score(self) -> dict | None:
        """The level with as many significant clusters as the true labels have classes: its
        clusters, β interval and ARI (None without labels)."""
        if self.true_labels is None:
            return None
        classes = len(np.unique(self.true_labels))
        k = self.level_with(classes)
        lev = self.levels[k]
        return {"classes": classes, "level": k, "clusters": lev.clusters, "significant": lev.significant,
                "beta_read": lev.beta_read, "beta_low": lev.beta_low, "beta_high": lev.beta_high, "ari": lev.ari}

    def split_table(self) -> list[dict]:
        return [dataclasses.asdict(s) for s in self.splits]

    def level_table(self) -> list[dict]:
        return [dataclasses.asdict(lev) for lev in self.levels]

    def plot(self, kind: str = "phase"):
        """A matplotlib Figure: "phase" (u, u′, u″ of the cross-check sweep against β, with the
        exact β_c) or "tree" (the dendrogram at the exact β_c)."""
        from vaefp_jax.figures import split as figures

        if kind == "phase":
            return figures.plot_split_phase(self)
        if kind == "tree":
            return figures.plot_split_tree(self)
        raise ValueError(f"kind must be 'phase' or 'tree', got {kind!r}")

    # -- saving -------------------------------------------------------------------------------

    _ARRAYS = ("x", "level_psi", "level_log_mass", "level_nodes", "directions", "sweep_beta", "sweep_u", "sweep_du",
               "sweep_d2u", "sweep_level")

    def save(self, folder, format: str = "png", figures: bool = True) -> list[str]:
        """Write ``run.json`` (record, splits, levels, score), ``tree.npz`` (every array),
        ``splits.csv``, ``levels.csv``, ``labels.csv`` (n rows: the point, its input row, its true
        label if any, one column per level), ``linkage.csv`` (SciPy), ``sweep.csv`` and, with
        ``figures``, ``phase.<format>`` and ``tree.<format>``. Returns the paths written."""
        if format not in ("png", "pdf", "svg"):
            raise ValueError(f"format must be png, pdf or svg, got {format!r}")
        folder = begin_run(folder)
        paths = []
        npz = os.path.join(folder, "tree.npz")
        extra = {} if self.true_labels is None else {"true_labels": np.asarray(self.true_labels).astype(str)}
        with atomic_path(npz) as tmp:
            # numpy's stub matches **arrays against its own keyword arguments (allow_pickle: bool)
            np.savez_compressed(tmp, tree_beta=self.tree.beta, tree_labels=self.tree.labels, linkage=self.tree.linkage,
                                **{k: getattr(self, k) for k in self._ARRAYS}, **extra)  # type: ignore[arg-type]
        paths.append(npz)
        for name, rows, cls in (("splits", self.split_table(), SplitRow), ("levels", self.level_table(), LevelRow)):
            paths.append(write_csv(os.path.join(folder, f"{name}.csv"), rows,
                                    [f.name for f in dataclasses.fields(cls)]))
        paths.append(write_csv(os.path.join(folder, "sweep.csv"),
                                [{"beta": float(b), "u": float(u), "du": float(du), "d2u": float(d2), "level": int(k)}
                                 for b, u, du, d2, k in zip(self.sweep_beta, self.sweep_u, self.sweep_du,
                                                            self.sweep_d2u, self.sweep_level)],
                                ["beta", "u", "du", "d2u", "level"]))
        cols = np.stack([self.labels(k) for k in range(len(self.levels))], axis=1)
        paths += save_labels_and_figures(self, folder, [f"clusters={lev.clusters}" for lev in self.levels], cols,
                                         format, figures)
        record = {**self.record, "kind": "phase-tree", "splits": self.split_table(), "levels": self.level_table(),
                  "merges": [{**dataclasses.asdict(m), "children": list(m.children)} for m in self.tree.merges],
                  "tree_complete": self.tree.complete, "min_mass": self.min_mass,
                  "persistent_level": self.persistent_level, "score": self.score()}
        paths.insert(0, write_record(folder, record, paths))
        return paths

    @classmethod
    def load(cls, folder) -> SplitResult:
        """The :class:`SplitResult` that :meth:`save` wrote into ``folder``."""
        rec, a = read_run(folder, "phase-tree", "tree.npz")
        nan = float("nan")
        splits = tuple(SplitRow(**{**s, "u": nan if s.get("u") is None else s["u"],
                                   "du_above": nan if s.get("du_above") is None else s["du_above"]})
                       for s in rec.pop("splits"))
        levels = tuple(LevelRow(**{**lev, "beta_high": float("inf") if lev["beta_high"] is None else lev["beta_high"],
                                   "width": float("inf") if lev["width"] is None else lev["width"]})
                       for lev in rec.pop("levels"))
        merges = tuple(Merge(**{**m, "children": tuple(m["children"])}) for m in rec.pop("merges"))
        tree = MergeTree(beta=a.pop("tree_beta"), labels=a.pop("tree_labels"), merges=merges,
                         linkage=a.pop("linkage"), complete=bool(rec.pop("tree_complete")))
        for key in ("score", "files", "persistent_level"):
            rec.pop(key, None)
        return cls(splits=splits, levels=levels, tree=tree, true_labels=a.pop("true_labels", None),
                   min_mass=float(rec.pop("min_mass")), record=rec, **{k: a[k] for k in cls._ARRAYS})

    def __repr__(self):
        exact = sum(s.exact for s in self.splits)
        first = f"{self.splits[0].beta_c:.6g}" if self.splits else "none"
        return (f"SplitResult({self.x.shape[0]} points in {self.x.shape[1]}-D, {len(self.levels)} levels, "
                f"{len(self.splits)} splits ({exact} exact), first β_c {first}, most persistent level "
                f"{self.levels[self.persistent_level].clusters} clusters)")


def level_ari(true_labels, labels) -> float | None:
    return None if true_labels is None else float(adjusted_rand_index(true_labels, labels))
