r"""The reduced phase analysis of a data set in one call: the split tree, its levels and labels,
the exact critical temperatures, and the paper's detection as a cross-check.

:func:`split_analysis` chains

1. the data's preparation shared with the tile analysis (:func:`~vaefp_jax.phase.analysis.prepare_data`:
   missing values, standardisation, warnings);
2. the annealing of the reduced fixed point (:func:`vaefp_jax.phase.annealing.anneal`): one
   split at a time, every β_c the root of λ_max(C_a(β)) = β on its branch;
3. the levels: their β intervals, persistence (width in ln β), significant clusters (mass ≥
   ``min_mass``), nested labels and, with true labels, the ARI of each;
4. the cross-check (eq. 3's detection, as the tile analysis and the paper do it): on a β grid
   inside every level's interval, u, u′ and u″ of the level's branch by implicit differentiation
   (:func:`vaefp_jax.phase.reduced_implicit.branch_derivatives`): the branch solved at every β
   of a level in one ``vmap``, the derivatives one β at a time (memory). u′ jumps and u″ peaks
   where the exact β_c are; the phase figure shows both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from vaefp_jax.phase.analysis import prepare_data
from vaefp_jax.phase.annealing import anneal
from vaefp_jax.phase.split_result import EXACT, LevelRow, SplitResult, SplitRow, level_ari
from vaefp_jax.phase.tree import build_tree
from vaefp_jax.runs import make_record

if TYPE_CHECKING:   # annotations only: the module imports JAX on use
    import numpy.typing as npt
    from jax.typing import ArrayLike

__all__ = ["default_max_clusters", "split_analysis"]


def default_max_clusters(classes: int | None) -> int:
    """16 clusters; with true labels of ``classes`` classes, at least max(16, 2 × classes) and on
    until the tree has a level with as many significant clusters as classes (small clusters of
    atypical points often split off first), up to this cap: max(16, 8 × classes)."""
    return 16 if classes is None else max(16, 8 * int(classes))


def split_analysis(x: ArrayLike, *, max_clusters: int | None = None, beta_min: float | None = None,
                   standardize_data: bool = False, true_labels: npt.ArrayLike | None = None, min_mass: float = 0.01,
                   read: str = "low", cross_check: int = 12, cross_check_size: int = 2048,
                   data_record: dict | None = None, progress: Callable[..., None] | None = None,
                   drop_missing: bool = False, tol: float | None = None, max_steps: int = 100_000) -> SplitResult:
    """The split tree of ``x`` (n, d) by the reduced model (module docstring).

    Args:
      x: (n, d) data; float32 stays float32 (with JAX x64 off), anything else is float64.
      max_clusters: stop once the tree has this many clusters (default 16; with true labels, on
        until a level has as many significant clusters as classes, at least 2 × classes, at most
        :func:`default_max_clusters`); ``beta_min``: or at this β (default 1e-6 λ_max(Cov)).
      standardize_data: as in :func:`~vaefp_jax.phase.analysis.phase_analysis`.
      true_labels: as in :func:`~vaefp_jax.phase.analysis.phase_analysis`.
      drop_missing: as in :func:`~vaefp_jax.phase.analysis.phase_analysis`.
      data_record: as in :func:`~vaefp_jax.phase.analysis.phase_analysis`.
      min_mass: a cluster holding at least this fraction of the points is significant; the score
        reads the coarsest level with as many significant clusters as there are classes.
      read: where each level's fixed point is read ("low": its low-β end, just above the next
        split; "high": just below its own split).
      cross_check: β per level of the cross-check sweep (0: none).
      cross_check_size: the sweep covers the levels whose state has at most this many numbers,
        m (d + 1) (those whose implicit derivatives use a dense Jacobian; above it they need GMRES
        near every split and cost minutes per level at d = 784); ``record["cross_check_levels"]``
        says how many levels it covered. None: every level.
      progress: None, or ``progress(stage, done, total)``: stage "splits" after each split
        (total = max_clusters), then "cross-check" after each level.
      tol: of the branch solves (see :func:`~vaefp_jax.phase.annealing.anneal`).
      max_steps: of the branch solves (see :func:`~vaefp_jax.phase.annealing.anneal`). A
        solve that does not converge within max_steps does not stop the analysis: it is
        listed in ``record["unconverged"]`` (β, clusters, residual) and warned about.
    """
    if max_clusters is not None and int(max_clusters) < 1:
        raise ValueError(f"max_clusters must be ≥ 1, got {max_clusters}")
    if not 0 <= float(min_mass) < 1:
        raise ValueError(f"min_mass must lie in [0, 1), got {min_mass}")
    if beta_min is not None and not float(beta_min) > 0:
        raise ValueError(f"beta_min must be > 0, got {beta_min}")
    x, true, data = prepare_data(x, standardize_data=standardize_data, true_labels=true_labels,
                                 drop_missing=drop_missing, data_record=data_record)
    classes = None if true is None else len(np.unique(true))
    stop = None
    if max_clusters is None and classes is not None:   # on until `classes` significant clusters (and 2×classes)
        least = max(16, 2 * classes)
        stop = lambda lm: lm.size >= least and int(np.sum(np.exp(lm) >= min_mass)) >= classes  # noqa: E731
    max_clusters = default_max_clusters(classes) if max_clusters is None else int(max_clusters)
    tell = None if progress is None else (lambda m, beta: progress("splits", m, max_clusters))
    tree = anneal(x, max_clusters=max_clusters, beta_min=beta_min, read=read, progress=tell, tol=tol,
                  max_steps=max_steps, stop=stop)
    xs = np.asarray(x, np.float64)
    if tree.unconverged:
        import warnings

        warnings.warn(f"{len(tree.unconverged)} branch solves did not converge within max_steps = {max_steps} (β = "
                      + ", ".join(f"{b:.6g}" for b, _, _ in tree.unconverged[:5])
                      + (", …" if len(tree.unconverged) > 5 else "") + "); the splits near them are uncertain: "
                      "raise max_steps", UserWarning, stacklevel=2)
    splits = tuple(SplitRow(beta_c=s.beta, parent=s.parent, child_a=s.children[0], child_b=s.children[1],
                            mass_a=s.masses[0], mass_b=s.masses[1], condition=s.condition,
                            exact=bool(abs(s.condition) <= EXACT), clusters=k + 2, beta_upper=s.upper)
                   for k, s in enumerate(tree.splits))
    levels = tuple(LevelRow(clusters=len(lev.nodes), beta_low=lev.beta_low, beta_high=lev.beta_high,
                            width=lev.width, beta_read=lev.beta_read,
                            significant=int(np.sum(np.exp(lev.log_mass) >= min_mass)),
                            ari=level_ari(true, tree.labels[k]))
                   for k, lev in enumerate(tree.levels))
    # the MergeTree: levels in ascending β (read points), merges at the exact β_c
    order = np.arange(len(levels))[::-1]
    read_betas = np.array([tree.levels[k].beta_read for k in order])
    read_betas = np.maximum.accumulate(read_betas)     # non-decreasing (a level read on arrival shares its β)
    heights = {i: float(np.clip(tree.splits[order[i] - 1].beta, read_betas[i], read_betas[i + 1]))
               for i in range(len(order) - 1)}
    merge_tree = build_tree(read_betas, tree.labels[order], heights)
    if cross_check:
        *sweep, at_read = _cross_check(xs, tree, int(cross_check), progress, cross_check_size, int(max_steps))
        if read == "low":   # level k is read at the stable end of the split that ends it
            splits = tuple(dataclasses.replace(s, u=float(at_read[k][0]), du_above=float(at_read[k][1]))
                           if k < len(at_read) else s for k, s in enumerate(splits))
    else:
        sweep = (np.zeros(0),) * 4 + (np.zeros(0, int),)
    record = make_record("phase-tree", data=data, dtype=x.dtype, model="reduced", max_clusters=max_clusters,
                         beta_min=beta_min, min_mass=min_mass, read=read, cross_check=int(cross_check),
                         stopped=tree.stopped, seconds=tree.seconds,
                         unconverged=[{"beta": b, "clusters": m, "residual": r} for b, m, r in tree.unconverged],
                         cross_check_size=cross_check_size,
                         cross_check_levels=int(len(np.unique(sweep[4]))) if cross_check else 0,
                         solves=int(sum(s.solves for s in tree.splits)),
                         steps=int(sum(s.steps for s in tree.splits)))
    return SplitResult(x=xs, splits=splits, levels=levels,
                       level_psi=np.concatenate([lev.psi for lev in tree.levels]),
                       level_log_mass=np.concatenate([lev.log_mass for lev in tree.levels]),
                       level_nodes=np.concatenate([np.asarray(lev.nodes, np.int64) for lev in tree.levels]),
                       directions=np.array([s.direction for s in tree.splits]).reshape(len(splits), xs.shape[1]),
                       tree=merge_tree, sweep_beta=sweep[0], sweep_u=sweep[1], sweep_du=sweep[2], sweep_d2u=sweep[3],
                       sweep_level=sweep[4], true_labels=true, min_mass=float(min_mass), record=record)


def _cross_check(xs, tree, per_level: int, progress, max_size, max_steps: int):
    """(β, u, u′, u″, level) on ``per_level`` β strictly inside every level's interval (the root's
    from its split up to twice it), by implicit differentiation on the level's branch; and (u, u′)
    at every level's read point. The branch is solved to the tree's tolerance with the tree's
    step limit (a tighter one cost up to 100,000 steps per β in narrow levels between close
    splits)."""
    import jax.numpy as jnp

    from vaefp_jax.phase.annealing import pad_branch
    from vaefp_jax.phase.reduced import solve_reduced
    from vaefp_jax.phase.reduced_implicit import branch_derivatives

    xc = jnp.asarray(xs - xs.mean(axis=0))           # on the device once, for every level and β
    out: list[list[np.ndarray]] = [[], [], [], [], []]
    at_read = []
    levels = [lev for lev in tree.levels if max_size is None or len(lev.nodes) * (xs.shape[1] + 1) <= max_size]
    for k, lev in enumerate(levels):
        hi = 2.0 * lev.beta_low if not np.isfinite(lev.beta_high) else lev.beta_high
        betas = np.append(np.geomspace(lev.beta_low, hi, per_level + 2)[1:-1], lev.beta_read)
        # padded to the tree's size classes (one compiled program per class, not per level)
        # where the padded state stays within max_size, else as it is: the dense Jacobian then
        # serves either way (a padded branch past dense_max would fall to GMRES near the splits)
        psi, lm = lev.psi - xs.mean(axis=0), lev.log_mass
        padded = pad_branch(psi, lm)
        if max_size is None or padded[0].shape[0] * (xs.shape[1] + 1) <= max_size:
            psi, lm = padded
        # the tree's own tolerance and step limit: the branch as the tree solved it
        r = solve_reduced(xc, betas, psi, lm, tol=tree.tol, max_steps=max_steps)
        # one β at a time: the dense Jacobian's forward pass holds m(d+1) tangents of the (n, m)
        # posteriors (250 MB at n = 10⁴, d = 784, m = 2), which a vmap over β would multiply
        parts = [branch_derivatives(xc, r.psi[j:j + 1], r.log_mass[j:j + 1], jnp.asarray(betas[j:j + 1]))
                 for j in range(betas.size)]
        joined = [np.concatenate([np.asarray(getattr(e, f)) for e in parts]) for f in ("u", "du", "d2u")]
        ok = np.asarray(r.converged)
        u, du, d2u = (np.where(ok, np.asarray(a, np.float64), np.nan) for a in joined)
        at_read.append((u[-1], du[-1]))
        out[0].append(betas[:-1])
        for lst, arr in zip(out[1:4], (u, du, d2u)):
            lst.append(arr[:-1])
        out[4].append(np.full(betas.size - 1, k))
        if progress is not None:
            progress("cross-check", k + 1, len(levels))
    return (*(np.concatenate(o) for o in out), at_read)
