"""The result of a phase analysis: critical temperatures, the merge tree, labels, tables, saving.

:class:`PhaseResult` holds NumPy arrays only (the analysis runs on the host),
so that :meth:`PhaseResult.save` and :meth:`PhaseResult.load` round-trip it exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from vaefp_jax.clusters import adjusted_rand_index
from vaefp_jax.phase.tree import Merge, MergeTree
from vaefp_jax.runs import atomic_path, begin_run, read_run, write_record

__all__ = ["CriticalRow", "PhaseResult", "save_labels_and_figures", "source_rows", "write_csv"]


@dataclasses.dataclass(frozen=True)
class CriticalRow:
    """One critical temperature: ``beta`` the sweep point of a curvature peak, ``refined`` the β_c
    found by bisection on stability (NaN where the peak could not be bracketed), ``height`` the
    peak of the curvature used for detection (|∂²u/∂(ln β)²|, or its finite difference at a jump),
    ``abs_d2u`` |∂²u/∂β²| there, ``jump`` whether u jumps between sweep points, and the distinct
    fixed points at the neighbouring sweep points."""

    beta: float
    refined: float
    height: float
    abs_d2u: float
    jump: bool
    fixed_points_below: int
    fixed_points_above: int


_PER_BETA = ("beta", "u", "du", "d2u", "spectral_radius", "steps", "status", "residual", "distinct")


@dataclasses.dataclass(frozen=True, eq=False)
class PhaseResult:
    """Phase analysis of n points (:func:`vaefp_jax.phase_analysis`), β ascending.

    Attributes:
      x: (n, d) the data analysed (after standardisation, if any).
      log_prior: (K,) the tiles' log π_a.
      beta, u, du, d2u, spectral_radius, steps, status, residual, distinct: (B,) per β.
      psi: (B, K, d) the fixed points.
      critical: the :class:`CriticalRow` table, in ascending β.
      tree: the :class:`~vaefp_jax.phase.tree.MergeTree` over the converged β.
      true_labels: (n,) the labels given to score the clusters, or None.
      merge_tol: distance under which two ψ_a are one fixed point.
      record: what produced the run (:func:`vaefp_jax.runs.make_record`).
    """

    x: np.ndarray
    log_prior: np.ndarray
    beta: np.ndarray
    u: np.ndarray
    du: np.ndarray
    d2u: np.ndarray
    spectral_radius: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    residual: np.ndarray
    distinct: np.ndarray
    psi: np.ndarray
    critical: tuple[CriticalRow, ...]
    tree: MergeTree
    true_labels: np.ndarray | None
    merge_tol: float
    record: dict

    @property
    def converged(self) -> np.ndarray:
        return self.status == 0

    @property
    def source_rows(self) -> np.ndarray:
        """(n,) the row of the input (0-based, among a file's data rows or the array's rows) of
        every analysed point: ``arange(n)`` unless rows with missing values were dropped."""
        return source_rows(self.record, self.x.shape[0])

    def labels_at(self, beta: float | None = None, num_clusters: int | None = None) -> np.ndarray:
        """(n,) cluster of every point at ``beta`` or at the level closest to ``num_clusters`` clusters."""
        return self.tree.labels_at(beta=beta, num_clusters=num_clusters)

    @property
    def ari(self) -> np.ndarray | None:
        """(L,) adjusted Rand index of each level of the tree against ``true_labels`` (None without them)."""
        if self.true_labels is None:
            return None
        return np.array([adjusted_rand_index(self.true_labels, lab) for lab in self.tree.labels])

    def score(self) -> dict | None:
        """The level with as many clusters as ``true_labels`` has classes (closest count): its β, number
        of clusters and ARI; None without labels."""
        if self.true_labels is None:
            return None
        classes = len(np.unique(self.true_labels))
        lev = self.tree.level(num_clusters=classes)
        ari = self.ari
        assert ari is not None   # true_labels is set
        return {"classes": classes, "level": lev, "beta": float(self.tree.beta[lev]),
                "clusters": int(self.tree.counts[lev]), "ari": float(ari[lev])}

    def beta_table(self) -> list[dict]:
        """One row per β: β, u, u′, u″, ρ, steps, status, residual, distinct fixed points, and the
        number of point clusters of the tree (None where the β is not a level: not converged)."""
        level_of = {float(b): int(c) for b, c in zip(self.tree.beta, self.tree.counts)}
        return [{"beta": float(self.beta[j]), "u": float(self.u[j]), "du": float(self.du[j]),
                 "d2u": float(self.d2u[j]), "spectral_radius": float(self.spectral_radius[j]),
                 "steps": int(self.steps[j]), "status": int(self.status[j]), "converged": bool(self.status[j] == 0),
                 "residual": float(self.residual[j]), "distinct_fixed_points": int(self.distinct[j]),
                 "clusters": level_of.get(float(self.beta[j]))} for j in range(self.beta.size)]

    def critical_table(self) -> list[dict]:
        return [dataclasses.asdict(c) for c in self.critical]

    def merge_table(self) -> list[dict]:
        return [{**dataclasses.asdict(m), "children": list(m.children)} for m in self.tree.merges]

    def to_dataframe(self, table: str = "betas"):
        """A pandas DataFrame of ``table``: "betas", "critical", "merges" or "labels" (n rows, one
        column per level, named by its β). Needs pandas (not a dependency of vaefp_jax)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from None
        if table == "labels":
            return pd.DataFrame(self.tree.labels.T, columns=[f"{b:.6g}" for b in self.tree.beta])
        rows = {"betas": self.beta_table, "critical": self.critical_table, "merges": self.merge_table}
        if table not in rows:
            raise ValueError(f"table must be 'betas', 'critical', 'merges' or 'labels', got {table!r}")
        return pd.DataFrame(rows[table]())

    def plot(self, kind: str = "phase"):
        """A matplotlib Figure: "phase" (u and its curvature, β_c lines at the refined values,
        unconverged β marked) or "tree" (the dendrogram on a log-β axis)."""
        from vaefp_jax.figures import phase as figures

        if kind == "phase":
            return figures.plot_phase(self)
        if kind == "tree":
            return figures.plot_tree(self)
        raise ValueError(f"kind must be 'phase' or 'tree', got {kind!r}")

    # -- saving ---------------------------------------------------------------------------------

    def save(self, folder, format: str = "png", figures: bool = True) -> list[str]:
        """Write the run into ``folder``: ``run.json`` (record, critical table, merges, score),
        ``phase.npz`` (every array), ``betas.csv``, ``critical.csv``, ``merges.csv``,
        ``labels.csv`` (n rows: the point, its row in the input, its true label if any, then one
        column per level), ``linkage.csv`` (SciPy format) and, with ``figures``,
        ``phase.<format>`` and ``tree.<format>``. Returns the paths written."""
        if format not in ("png", "pdf", "svg"):
            raise ValueError(f"format must be png, pdf or svg, got {format!r}")
        folder = begin_run(folder)   # no run.json until every other file is in place
        paths = []
        npz = os.path.join(folder, "phase.npz")
        arrays = {k: getattr(self, k) for k in (*_PER_BETA, "x", "log_prior", "psi")}
        extra = {} if self.true_labels is None else {"true_labels": np.asarray(self.true_labels).astype(str)}
        with atomic_path(npz) as tmp:
            # numpy's stub matches **arrays against its own keyword arguments (allow_pickle: bool)
            np.savez_compressed(tmp, tree_beta=self.tree.beta, tree_labels=self.tree.labels,
                                linkage=self.tree.linkage, merge_tol=self.merge_tol,
                                **arrays, **extra)  # type: ignore[arg-type]
        paths.append(npz)
        for name, rows in (("betas", self.beta_table()), ("critical", self.critical_table()),
                           ("merges", self.merge_table())):
            paths.append(write_csv(os.path.join(folder, f"{name}.csv"), rows, _COLUMNS[name]))
        paths += save_labels_and_figures(self, folder, [f"beta={b:.6g}" for b in self.tree.beta], self.tree.labels.T,
                                         format, figures)
        record = {**self.record, "kind": "phase", "critical": self.critical_table(), "merges": self.merge_table(),
                  "tree_complete": self.tree.complete, "score": self.score()}
        paths.insert(0, write_record(folder, record, paths))
        return paths

    @classmethod
    def load(cls, folder) -> PhaseResult:
        """The :class:`PhaseResult` that :meth:`save` wrote into ``folder``."""
        rec, a = read_run(folder, "phase", "phase.npz")
        merges = tuple(Merge(**{**m, "children": tuple(m["children"])}) for m in rec.pop("merges"))
        critical = tuple(CriticalRow(**{**c, "refined": float("nan") if c["refined"] is None else c["refined"]})
                         for c in rec.pop("critical"))
        tree = MergeTree(beta=a.pop("tree_beta"), labels=a.pop("tree_labels"), merges=merges,
                         linkage=a.pop("linkage"), complete=bool(rec.pop("tree_complete")))
        rec.pop("score", None)
        rec.pop("files", None)
        true = a.pop("true_labels", None)
        return cls(critical=critical, tree=tree, true_labels=true, merge_tol=float(a.pop("merge_tol")), record=rec,
                   **a)

    def __repr__(self):
        conv = int(self.converged.sum())
        cs = ", ".join(f"{c.refined if np.isfinite(c.refined) else c.beta:.4g}" for c in self.critical)
        return (f"PhaseResult({self.x.shape[0]} points in {self.x.shape[1]}-D, {self.beta.size} β "
                f"[{self.beta[0]:.3g}, {self.beta[-1]:.3g}], converged {conv}; β_c {cs or 'none'}; {self.tree!r})")


_COLUMNS = {
    "betas": ["beta", "u", "du", "d2u", "spectral_radius", "steps", "status", "converged", "residual",
              "distinct_fixed_points", "clusters"],
    "critical": [f.name for f in dataclasses.fields(CriticalRow)],
    "merges": [f.name for f in dataclasses.fields(Merge)],
}


def source_rows(record: dict, n: int) -> np.ndarray:
    """(n,) the input row of every analysed point, from a run record's ``data`` (dropped rows)."""
    data = record.get("data", {}) or {}
    dropped = np.asarray(data.get("dropped_rows") or [], int)
    total = int(data.get("rows_in_file") or data.get("rows_given") or n + dropped.size)
    return np.setdiff1d(np.arange(total), dropped)


def save_labels_and_figures(result, folder, level_names, labels, format: str, figures: bool) -> list[str]:
    """Write ``labels.csv`` (n rows: the point, its input row, its true label if any, then its
    cluster at every level: ``labels`` (n, L), columns ``level_names``), ``linkage.csv`` (SciPy
    format) and, with ``figures``, ``result.plot("phase")`` and ``plot("tree")`` into ``folder``:
    the part of a run's files that the tile and the reduced analyses share. Returns the paths."""
    paths = []
    path = os.path.join(folder, "labels.csv")
    true = result.true_labels
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["point", "input_row"] + (["true_label"] if true is not None else []) + list(level_names))
        rows = result.source_rows
        for i in range(result.x.shape[0]):
            w.writerow([i, int(rows[i])] + ([true[i]] if true is not None else []) + np.asarray(labels[i]).tolist())
    paths.append(path)
    path = os.path.join(folder, "linkage.csv")
    with atomic_path(path) as tmp:
        np.savetxt(tmp, result.tree.linkage, delimiter=",", header="child_a,child_b,beta,size", comments="",
                   fmt=["%d", "%d", "%.17g", "%d"])
    paths.append(path)
    if figures:
        import matplotlib.pyplot as plt

        for kind in ("phase", "tree"):
            fig = result.plot(kind)
            path = os.path.join(folder, f"{kind}.{format}")
            try:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=150, format=format)
            finally:
                plt.close(fig)
            paths.append(path)
    return paths


def write_csv(path, rows, columns) -> str:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else
                            " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in r.items()})
    return path
