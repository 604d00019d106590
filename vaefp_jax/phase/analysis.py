"""The phase analysis of a data set in one call: β range, sweep, critical temperatures, merge tree, labels.

:func:`phase_analysis` chains the pieces a user would otherwise assemble:

1. the β range from the data (:func:`vaefp_jax.phase.scales.default_beta_range`)
   unless given;
2. :func:`vaefp_jax.sweep` with the accelerated iteration (plain iteration crawls
   near β_c, where ρ → 1) and cooling continuation (deterministic annealing: one
   branch, followed from the single cluster above λ_max down to the finest level);
3. the critical temperatures (:func:`vaefp_jax.critical_betas` in ln β), each
   refined by bisection on stability (:func:`vaefp_jax.refine_critical_beta`);
4. the cluster of every point at every converged β and the merge tree
   (:mod:`vaefp_jax.phase.tree`), the highest merges refined the same way;
5. an adjusted Rand index per level when true labels are given.

It works in units of the data's spread: x / s and β / s² with s the power of two nearest
to √tr Cov (exact in floating point, and s = 1 for data of unit spread), and gives every
result back in the data's units (β, u and ψ scale as s², s², s; u′ not at all; u″ as
1/s²: eq. (14)–(15) depend on x, ψ and β only through ‖x − ψ‖²/β). So the iteration's
tolerances are relative to the data's spread, and a column in units of 1e9 converges as
one in units of 1 (an absolute tolerance of 1e-10 sits below the rounding of ψ ~ 1e9).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaefp_jax.clusters import default_merge_tol, rms_spread
from vaefp_jax.grid import LatentGrid
from vaefp_jax.io import rows_with_missing
from vaefp_jax.phase.critical import (
    critical_betas,
    refine_bracket,
    refine_critical_beta,
)
from vaefp_jax.phase.result import CriticalRow, PhaseResult
from vaefp_jax.phase.scales import default_beta_range
from vaefp_jax.phase.sweep import sweep
from vaefp_jax.phase.tree import build_tree, nested_levels, point_groups
from vaefp_jax.runs import array_sha256, make_record

if TYPE_CHECKING:   # annotations only: the module imports JAX and the iterations on use
    import numpy.typing as npt
    from jax.typing import ArrayLike

    from vaefp_jax.iterations.base import Iteration
    from vaefp_jax.maps.base import StepMap

__all__ = ["phase_analysis", "prepare_data", "standardize"]

# Bisection on stability: 14 halvings of a bracket one or two sweep spacings wide (a few
# per cent of β on a default sweep) leave it ~1e-5 wide in ln β, beyond the four digits the
# tables print, each halving a Newton solve; ρ by 48 Lanczos steps at Newton's fixed point
# (resolves ρ near 1).
REFINE: dict[str, Any] = dict(iterations=14, spectral_iters=48, spectral="lanczos")


def standardize(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, mean, scale): every column of ``x`` (n, d) to mean 0 and (1/n) variance 1. A constant
    column becomes 0 (scale 1): it adds nothing to any distance, as if it were left out."""
    x = np.asarray(x, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return (x - mean) / scale, mean, scale


# |z| beyond which a standardised value is reported: a point that far out along one
# coordinate is a cluster of its own up to β ~ z²/2 (the kernel exp(−z²/2β) of eq. 14
# cannot reach it), far above λ_max ~ a few.
EXTREME_Z = 10.0


def extreme_values(z) -> tuple[list[int], int]:
    """(columns, points): the columns of the standardised ``z`` (n, d) holding an entry with
    |z| > :data:`EXTREME_Z`, and the number of points (rows) holding one. Nearly constant
    columns make them (a pixel that is 0 but in a few images): their few points split off as
    clusters of their own at every β of the default range, so the tree stays incomplete and
    the fine levels hold them."""
    big = np.abs(np.asarray(z)) > EXTREME_Z
    return np.nonzero(big.any(axis=0))[0].tolist(), int(big.any(axis=1).sum())


def working_scale(x) -> float:
    """The power of two nearest to the data's RMS spread √tr Cov (1.0 for a spread of 0)."""
    spread = rms_spread(x)
    return float(2.0 ** np.round(np.log2(spread))) if spread > 0 and np.isfinite(spread) else 1.0


def _drop_nonfinite(x, true_labels, drop: bool, data: dict):
    """(x, true_labels) without the rows holding NaN or inf (``drop``), recorded in ``data``; or a
    one-line error that counts those rows and names the first few."""
    rows, shown = rows_with_missing(~np.isfinite(x), lambda r, c: f"row {r}, column {c}")
    if rows.size == 0:
        return x, true_labels
    n = x.shape[0]
    if not drop:
        raise ValueError(f"x has NaN or inf values in {rows.size} of {n} rows ({shown}; 0-based): drop those rows "
                         "with drop_missing=True (--drop-missing), or fill them")
    if n - rows.size < 2:
        raise ValueError(f"x has NaN or inf values in {rows.size} of {n} rows ({shown}): fewer than 2 rows are "
                         "left after dropping them")
    keep = np.setdiff1d(np.arange(n), rows)
    warnings.warn(f"dropped {rows.size} of {n} rows with NaN or inf values ({shown}; 0-based); record['data']"
                  "['dropped_rows'] lists them", UserWarning, stacklevel=3)
    data.update(rows_given=n, dropped_rows=rows.tolist())
    return x[keep], None if true_labels is None else true_labels[keep]


def prepare_data(x, *, standardize_data: bool = False, true_labels=None, drop_missing: bool = False,
                 data_record: dict | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(x, true_labels as strings or None, data record): the checks and preparation shared by the
    analyses: a numeric (n, d) array with n ≥ 2, rows with NaN or inf refused or dropped
    (``drop_missing``), standardised columns (``standardize_data``, with warnings for constant
    columns and extreme values), and not all one point. Float dtypes are kept, integers become
    float64."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2 or x.dtype.kind not in "fiu":
        raise ValueError(f"x must be a numeric (n, d) array with n ≥ 2, got shape {x.shape} and dtype {x.dtype}")
    if not isinstance(drop_missing, bool):
        raise ValueError(f"drop_missing must be True or False, got {drop_missing!r}")
    true = None if true_labels is None else np.asarray(true_labels).astype(str)
    if true is not None and true.shape != (x.shape[0],):
        raise ValueError(f"true_labels must have shape ({x.shape[0]},), got {true.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    data = dict(data_record or {"source": "array", "sha256": array_sha256(x)})
    x, true = _drop_nonfinite(x, true, drop_missing, data)
    data.update(n=int(x.shape[0]), d=int(x.shape[1]))
    if standardize_data:
        z, mean, scale = standardize(x)
        x = z.astype(dtype)
        constant = np.nonzero(np.asarray(x).std(axis=0) == 0)[0].tolist()
        data.update(standardized=True, mean=mean.tolist(), scale=scale.tolist(), constant_columns=constant)
        if constant:
            names = data.get("columns")
            shown = ", ".join(repr(names[c]) if names and c < len(names) else str(c) for c in constant[:8])
            warnings.warn(f"{len(constant)} constant column{'s' if len(constant) > 1 else ''} ({shown}"
                          f"{', …' if len(constant) > 8 else ''}): standardising sets "
                          f"{'them' if len(constant) > 1 else 'it'} "
                          "to 0, so they add nothing to any distance (as if left out)", UserWarning, stacklevel=3)
        columns, points = extreme_values(z)
        data.update(extreme_points=points)
        if points:
            shown = ", ".join(str(c) for c in columns[:8]) + (", …" if len(columns) > 8 else "")
            warnings.warn(f"standardising put {points} points beyond {EXTREME_Z:g} standard deviations (columns "
                          f"{shown}: nearly constant); they will form clusters of their own, so the tree may not "
                          "merge into one: leave standardisation off when the columns share units (e.g. pixels)",
                          UserWarning, stacklevel=3)
    else:
        data.update(standardized=False)
    if np.all(np.ptp(np.asarray(x, np.float64), axis=0) == 0):
        raise ValueError(f"all {x.shape[0]} points are the same point: there is no structure to analyse")
    return np.asarray(x, dtype), true, data


def phase_analysis(x: ArrayLike, *, grid: LatentGrid | None = None, betas: ArrayLike | None = None,
                   num_betas: int = 48, beta_range=None, standardize_data: bool = False,
                   true_labels: npt.ArrayLike | None = None, iteration: Iteration | None = None,
                   step_map: StepMap | None = None, continuation: str | None = "cooling", top_k: int = 8,
                   refine_merges: int = 6, seed: int = 0, data_record: dict | None = None,
                   throw: bool | None = None, progress: Callable[..., None] | None = None,
                   drop_missing: bool = False) -> PhaseResult:
    """Critical temperatures, merge tree and point labels of ``x`` (n, d).

    Args:
      x: (n, d) data; its dtype (float64 with JAX x64, recommended for u″) is the working dtype.
      grid: the tiles; default a 12×12 uniform grid (K = 144).
      betas: (B,) the β to visit; default ``num_betas`` log-spaced over ``beta_range`` = (low, high),
        where an end that is None (or both, ``beta_range=None``) comes from
        :func:`~vaefp_jax.phase.scales.default_beta_range` of the (standardised) data.
      standardize_data: analyse (x − mean)/std (recorded in ``record["data"]``).
      true_labels: (n,) known classes, to score each level's clusters (ARI).
      iteration: default :class:`~vaefp_jax.Accelerated` (any iteration of :func:`vaefp_jax.solve`).
      step_map: as in :func:`vaefp_jax.solve`.
      continuation: "cooling" (default), "heating" or None (independent solves, the paper's).
      top_k: how many curvature peaks (the tallest) are reported, each refined; listed in ascending β.
      refine_merges: how many brackets of the tree with merges, from the highest β down, get a
        refined β_c (the others sit at their bracket's geometric midpoint).
      seed: seed of the initial noise and of the continuation's perturbations.
      data_record: what the data is (file, hash, columns), stored in ``record``.
      throw: as in :func:`vaefp_jax.solve`, about unconverged β (which are left out of the tree).
      progress: None, or ``progress(stage, done, total)``, told as each piece ends: stages
        "sweep" and "derivatives" (as in :func:`~vaefp_jax.phase.sweep.sweep`), then "peaks"
        and "merges" (each refinement of a curvature peak, of a bracket of the tree).
      drop_missing: drop the rows of ``x`` holding NaN or inf (and the same rows of
        ``true_labels``; a warning counts them, ``record["data"]["dropped_rows"]`` lists them)
        instead of refusing ``x``.
    """
    from vaefp_jax.iterations.accelerated import Accelerated

    x, true, data = prepare_data(x, standardize_data=standardize_data, true_labels=true_labels,
                                 drop_missing=drop_missing, data_record=data_record)
    dtype = x.dtype
    grid = LatentGrid.uniform(12) if grid is None else grid
    analysed = x   # the result's x, in the data's units
    unit = working_scale(x)
    x = (np.asarray(x, np.float64) / unit).astype(dtype)
    data.update(working_scale=unit)
    if betas is None:
        lo, hi = (None, None) if beta_range is None else beta_range
        lo, hi = (None if v is None else v / unit**2 for v in (lo, hi))
        if lo is None or hi is None:   # the missing end(s) from the data
            auto = default_beta_range(x)
            lo, hi = auto[0] if lo is None else lo, auto[1] if hi is None else hi
        if not (0 < lo < hi):
            raise ValueError(f"the β range [{lo * unit**2:g}, {hi * unit**2:g}] is empty or not positive (an end "
                             "not given is chosen from the data: give both)")
        betas = np.geomspace(lo, hi, int(num_betas))
    else:
        betas = np.asarray(betas, np.float64) / unit**2
    betas = np.sort(np.asarray(betas, np.float64))
    if betas.size < 3:
        raise ValueError(f"a phase analysis needs at least 3 β, got {betas.size}")
    iteration = Accelerated() if iteration is None else iteration
    import jax

    r = sweep(x, betas, grid, iteration=iteration, step_map=step_map, continuation=continuation,
              key=jax.random.PRNGKey(int(seed)), throw=throw, spectral="lanczos",
              spectral_iters=REFINE["spectral_iters"], progress=progress)
    xs = np.asarray(x, np.float64)

    found: list[CriticalRow] = []
    peaks = sorted(critical_betas(r, top_k=top_k, variable="log_beta"), key=lambda p: p.beta)
    for i, p in enumerate(peaks):
        try:
            refined = refine_critical_beta(r, p, xs, grid, **REFINE)
        except ValueError:   # a peak next to the end of the sweep cannot be bracketed
            refined = float("nan")
        found.append(CriticalRow(beta=p.beta, refined=float(refined), height=p.height,
                                 abs_d2u=float(abs(r.d2u[p.index])), jump=p.jump,
                                 fixed_points_below=p.fixed_points_below, fixed_points_above=p.fixed_points_above))
        if progress is not None:
            progress("peaks", i + 1, len(peaks))

    merge_tol = default_merge_tol(xs)
    lp = np.asarray(grid.log_prior, np.float64)
    ok = np.nonzero(r.converged)[0]
    if ok.size == 0:
        from vaefp_jax.engine.solution import NotConvergedError

        raise NotConvergedError(f"none of the {r.beta.size} β converged ({iteration!r}): there is no level to "
                                "build the tree from; allow more steps")
    groups = [point_groups(xs, r.psi[j], r.beta[j], lp, merge_tol) for j in ok]
    labels = nested_levels(xs, groups)
    counts = labels.max(axis=1) + 1
    brackets = [lev for lev in range(len(ok) - 1) if counts[lev] > counts[lev + 1]]
    heights = {}
    chosen = brackets[::-1][:max(int(refine_merges), 0)]
    for i, lev in enumerate(chosen):
        lo, hi = ok[lev], ok[lev + 1]
        beta_c, _ = refine_bracket(xs, grid, float(r.beta[lo]), float(r.beta[hi]), r.psi[hi], step_map=r.step_map,
                                   **REFINE)
        heights[lev] = beta_c
        if progress is not None:
            progress("merges", i + 1, len(chosen))
    tree = build_tree(r.beta[ok], labels, heights)

    b2 = unit**2   # back to the data's units (see the module docstring)
    record = make_record("phase", data=data, grid=grid, iteration=iteration, step_map=r.step_map,
                         dtype=np.asarray(r.psi).dtype, seed=int(seed), betas=betas * b2,
                         continuation=continuation, top_k=top_k, refine_merges=refine_merges,
                         merge_tol=merge_tol * unit)
    critical = tuple(dataclasses.replace(c, beta=c.beta * b2, refined=c.refined * b2, height=c.height * b2,
                                         abs_d2u=c.abs_d2u / b2) for c in found)
    tree = dataclasses.replace(
        tree, beta=tree.beta * b2, linkage=tree.linkage * np.array([1.0, 1.0, b2, 1.0]),
        merges=tuple(dataclasses.replace(m, beta_low=m.beta_low * b2, beta_high=m.beta_high * b2,
                                         height=m.height * b2) for m in tree.merges))
    return PhaseResult(x=np.asarray(analysed, np.float64), log_prior=lp, beta=np.asarray(r.beta, np.float64) * b2,
                       u=np.asarray(r.u) * b2, du=np.asarray(r.du), d2u=np.asarray(r.d2u) / b2,
                       spectral_radius=r.spectral_radius, steps=np.asarray(r.steps), status=np.asarray(r.status),
                       residual=np.asarray(r.residual) * unit, distinct=np.asarray(r.distinct),
                       psi=np.asarray(r.psi) * unit, critical=critical, tree=tree, true_labels=true,
                       merge_tol=merge_tol * unit, record=record)
