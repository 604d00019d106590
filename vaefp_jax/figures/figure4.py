"""Figure 4: β-VAE fixed points with local and global Lipschitz constraints.

Two blocks of columns, mixture of lines (left) and mixture of circles (right);
rows: no constraint (β increases along the row), local constraint (r = 0.2) and
global constraint (every pair of tiles), the constraint strength increasing along
the row at a fixed small β. Grey: trajectories of the ψ_a from a uniform 2-D grid of
initial conditions (the tile centres); red: the fixed points; blue: the data.

The constrained rows use the projected update of Proposition 6 in strength mode
(:func:`vaefp_jax.solve` with :class:`vaefp_jax.LipschitzStrength`); strengths are
given in units of the grid's natural strength ω₀
(:func:`vaefp_jax.constraints.strength_scale`, where the
smoothing and the data terms of the update balance on an average tile), so they
mean the same on any grid size. The paper does not state its strengths.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from vaefp_jax import datasets
from vaefp_jax.cli_types import EXIT_NOT_CONVERGED
from vaefp_jax.constraints import (
    LipschitzStrength,
    lipschitz_coefficients,
    strength_scale,
    support_mask,
)
from vaefp_jax.engine.solve import solve
from vaefp_jax.grid import LatentGrid
from vaefp_jax.iterations import Damped
from vaefp_jax.runs import prepare_out

__all__ = ["Figure4Data", "Panel", "compute_figure4", "figure4", "figure4_command", "plot_figure4"]

BETAS = (3e-4, 2e-3, 8e-3, 3e-2)
BETA_CONSTRAINED = 1e-3
LOCAL_STRENGTHS = (0.03, 0.1, 0.3, 1.0)
GLOBAL_STRENGTHS = (0.003, 0.01, 0.03, 0.1)
ROWS = ("none", "local", "global")


@dataclasses.dataclass(frozen=True)
class Panel:
    """One panel: its dataset and row, β, strength (units of ω₀), the trajectory
    (T, K, 2), the fixed points ψ (K, 2), and the solver's bookkeeping."""

    dataset: str
    row: str
    beta: float
    strength: float
    trajectory: np.ndarray
    psi: np.ndarray
    steps: int
    converged: bool


@dataclasses.dataclass(frozen=True)
class Figure4Data:
    """Everything the figure shows: ``data`` maps a dataset name to x (n, 2);
    ``panels[dataset][row]`` is the list of :class:`Panel` along a row."""

    data: dict
    panels: dict
    k: int
    local_r: float
    global_r: float


def _row(x, grid, betas, strengths_rel, support, r, iteration, record_every, name, row):
    if support is None:
        constraint = None                     # unconstrained (= strength 0 exactly)
        rel = np.zeros(len(betas))
    else:
        C, mask = lipschitz_coefficients(grid, 1.0), support_mask(grid, support, r)
        w0 = strength_scale(grid, mask, C)
        rel = np.asarray(strengths_rel, np.float64)
        constraint = LipschitzStrength(rel * w0, support=support, r=r)
    res = solve(x, np.asarray(betas), grid, iteration=iteration, constraint=constraint, psi0=grid.z,
                record_every=record_every, throw=False)
    traj = np.asarray(res.trajectory)
    return [Panel(dataset=name, row=row, beta=float(res.beta[j]), strength=float(rel[j]),
                  trajectory=traj[j], psi=np.asarray(res.psi[j]), steps=int(res.steps[j]),
                  converged=bool(res.converged[j])) for j in range(len(rel))]


def compute_figure4(*, k: int = 32, n: int = 150, seed: int = 0, betas=BETAS,
                    beta_constrained: float = BETA_CONSTRAINED, local_strengths=LOCAL_STRENGTHS,
                    global_strengths=GLOBAL_STRENGTHS, local_r: float = 0.2, global_r: float = 1.0,
                    iteration: Damped | None = None, record_every: int = 2,
                    small: bool = False) -> Figure4Data:
    """Run the 3 × 2·C fixed-point problems of Figure 4 (float32 is enough).

    Args:
      k: the latent grid is k × k on [−½, ½]² with a uniform prior (Appendix A).
      n, seed: dataset size and seed.
      betas: β along the top row; beta_constrained: β of the constrained rows.
      local_strengths, global_strengths: strengths along the other rows, in units
        of the grid's ω₀ (same length as ``betas``).
      local_r: the radius of the local support; global_r: unused (the global
        support is every pair of tiles), kept for the callers that pass it.
      iteration: default the paper's (``Damped.paper()``: damping 0.1, tol 1e-3, 400 steps).
      record_every: trajectory sampling (steps).
      small: a quick, coarse setting (k = 8, n = 45, 3 columns, 80 steps) for tests.
    """
    if small:
        k, n = 8, 45
        betas, local_strengths, global_strengths = betas[::2][:2] + betas[-1:], \
            local_strengths[::2][:2] + local_strengths[-1:], global_strengths[::2][:2] + global_strengths[-1:]
        iteration = iteration or Damped(damping=0.1, tol=1e-3, max_steps=80, init_noise=0.0)
    iteration = iteration or Damped.paper()
    if not (len(betas) == len(local_strengths) == len(global_strengths)):
        raise ValueError("betas, local_strengths and global_strengths must have the same length")
    grid = LatentGrid.uniform(k)
    data = {"lines": datasets.mixture_of_lines(n, seed=seed).astype(np.float32),
            "circles": datasets.mixture_of_circles(n, seed=seed).astype(np.float32)}
    panels = {}
    for name, x in data.items():
        panels[name] = {
            "none": _row(x, grid, betas, None, None, None, iteration, record_every, name, "none"),
            "local": _row(x, grid, [beta_constrained] * len(betas), local_strengths, "local", local_r,
                          iteration, record_every, name, "local"),
            "global": _row(x, grid, [beta_constrained] * len(betas), global_strengths, "global",
                           global_r, iteration, record_every, name, "global"),
        }
    return Figure4Data(data=data, panels=panels, k=k, local_r=float(local_r), global_r=float(global_r))


def _draw(ax, x, panel: Panel, lw: float, max_tracks: int):
    from matplotlib.collections import LineCollection

    traj = panel.trajectory                                  # (T, K, 2)
    K = traj.shape[1]
    if K > max_tracks:  # an evenly spread subset of the tracks (the PNG stays small)
        traj = traj[:, np.linspace(0, K - 1, max_tracks).round().astype(int)]
    segs = np.transpose(traj, (1, 0, 2))                     # (tracks, T, 2)
    # matplotlib's stub wants a Sequence of segments; a (tracks, T, 2) array, which its docs allow, works
    ax.add_collection(LineCollection(segs, colors="0.55", linewidths=lw, alpha=0.5, zorder=1,  # type: ignore[arg-type]
                                     rasterized=True))
    ax.scatter(x[:, 0], x[:, 1], s=2.5, color="tab:blue", zorder=2, linewidths=0)
    ax.scatter(panel.psi[:, 0], panel.psi[:, 1], s=2.5, color="tab:red", zorder=3, linewidths=0)
    ax.set_xlim(-0.55, 0.55)
    ax.set_ylim(-0.55, 0.55)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_figure4(fd: Figure4Data, panel_size: float = 2.0, max_tracks: int = 400):
    """The matplotlib Figure: 3 rows × (2 datasets × C columns); at most
    ``max_tracks`` grey trajectories per panel (all fixed points are drawn)."""
    import matplotlib.pyplot as plt

    names = list(fd.panels)
    cols = len(fd.panels[names[0]]["none"])
    fig, axes = plt.subplots(3, 2 * cols, figsize=(panel_size * 2 * cols + 0.6, panel_size * 3 + 0.7),
                             squeeze=False)
    lw = 0.25 if fd.k >= 24 else 0.5
    labels = {"none": "no constraint", "local": f"local (r = {fd.local_r:g})",
              "global": "global (all pairs)"}
    for b, name in enumerate(names):
        x = fd.data[name]
        for i, row in enumerate(ROWS):
            for j, panel in enumerate(fd.panels[name][row]):
                ax = axes[i, b * cols + j]
                _draw(ax, x, panel, lw, max_tracks)
                title = (f"β = {panel.beta:.2g}" if row == "none"
                         else f"β = {panel.beta:.2g}, Ω̃ = {panel.strength:g} ω₀")
                ax.set_title(title + ("" if panel.converged else " (not conv.)"), fontsize=7)
                if b == 0 and j == 0:
                    ax.set_ylabel(labels[row], fontsize=8)
    fig.suptitle("Figure 4: mixture of lines (left), mixture of circles (right); "
                 "rows: no / local / global Lipschitz constraint", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def figure4(out_path: str | None = None, *, k: int = 32, small: bool = False, dpi: int = 85,
            max_tracks: int = 300, **kwargs):
    """Compute and draw Figure 4; save a PNG to ``out_path`` if given.

    Keyword arguments go to :func:`compute_figure4` (``n``, ``seed``, ``betas``,
    ``beta_constrained``, ``local_strengths``, ``global_strengths``, ``local_r``,
    ``global_r``, ``iteration``, ``record_every``). Returns the Figure (its data is
    attached as ``fig.figure4_data``).
    """
    fd = compute_figure4(k=k, small=small, **kwargs)
    fig = plot_figure4(fd, max_tracks=max_tracks)
    fig.figure4_data = fd
    if out_path:
        fig.savefig(out_path, dpi=dpi)
    return fig


def figure4_command(args) -> int:
    """``vaefp figure 4 [--small] [--seed S] [--out DIR] [--format F]``: writes DIR/figure4.<F>; exit code 3
    under ``--strict`` when some panel did not converge."""
    import matplotlib

    matplotlib.use("Agg")
    prepare_out(args.out)
    png = os.path.join(args.out, f"figure4.{getattr(args, 'format', 'png')}")
    fig = figure4(png, small=bool(getattr(args, "small", False)), seed=int(getattr(args, "seed", 0)))
    fd = fig.figure4_data
    print(f"{'dataset':>8} {'row':>7} {'beta':>9} {'strength/ω₀':>11} {'steps':>6} {'conv':>5}")
    for name, rows in fd.panels.items():
        for row, panels in rows.items():
            for p in panels:
                print(f"{name:>8} {row:>7} {p.beta:9.3g} {p.strength:11.3g} {p.steps:6d} "
                      f"{'yes' if p.converged else 'no':>5}")
    print(f"wrote {png}")
    bad = [f"{name} {row} β = {p.beta:.3g}, strength {p.strength:.3g}" for name, rows in fd.panels.items()
           for row, panels in rows.items() for p in panels if not p.converged]
    if bad:
        total = sum(len(panels) for rows in fd.panels.values() for panels in rows.values())
        print(f"WARNING: {len(bad)} of {total} panels did not converge ({'; '.join(bad)}): marked 'no' above",
              file=sys.stderr)
    return EXIT_NOT_CONVERGED if bad and getattr(args, "strict", False) else 0
