"""Figure 3: fixed points, trajectories, u(β) and ∂²u/∂β² with the detected β_c (refined)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import numpy as np

from vaefp_jax import datasets, phase
from vaefp_jax.cli_types import EXIT_NOT_CONVERGED
from vaefp_jax.engine.solve import solve
from vaefp_jax.figures.phase import draw_order_parameter
from vaefp_jax.grid import LatentGrid
from vaefp_jax.iterations import Damped
from vaefp_jax.runs import prepare_out

__all__ = ["Figure3Data", "compute_figure3", "figure3", "figure3_command", "plot_figure3"]


@dataclasses.dataclass(frozen=True)
class Figure3Data:
    """What the figure shows. ``sweep``: the β sweep with derivatives;
    ``peaks``: the top critical points; ``refined``: their refined β_c;
    ``snapshots``: (β, trajectory (T, K, 2), fixed points (K, 2)) for the top row."""

    x: np.ndarray
    sweep: phase.SweepResult
    peaks: list
    refined: list
    snapshots: list
    variable: str = "log_beta"


def compute_figure3(x=None, *, k: int = 32, betas=None, snapshot_betas=(3e-4, 3e-3, 1.5e-2, 0.1),
                    top_k: int = 3, iteration: Damped | None = None, seed: int = 0,
                    variable: str = "log_beta") -> Figure3Data:
    """Run the sweeps behind Figure 3 (float64 recommended: enable JAX x64).

    The derivative sweep uses accurate fixed points (``iteration``, default
    undamped with tol 1e-8 and at most 5000 steps); the top-row trajectories use
    the paper's protocol (:meth:`Damped.paper`, Appendix A) from the grid initialisation. Peaks are
    ranked by the curvature in ``variable`` (default ln β: the sweep spans four
    decades, over which |∂²u/∂β²| itself grows like 1/β²; "beta" is the paper's
    literal measure).
    """
    x = datasets.three_clusters(120, seed=seed) if x is None else np.asarray(x)
    grid = LatentGrid.uniform(k)
    betas = np.geomspace(1e-4, 1.0, 64) if betas is None else np.asarray(betas)
    iteration = Damped(damping=0.0, tol=1e-8, max_steps=5000) if iteration is None else iteration
    key = jax.random.PRNGKey(seed)
    res = phase.sweep(x, betas, grid, iteration=iteration, key=key, spectral="lanczos", spectral_iters=48,
                      throw=False)
    peaks = phase.critical_betas(res, top_k=top_k, variable=variable)
    refined = []
    for p in peaks:
        try:
            refined.append(phase.refine_critical_beta(res, p, x, grid, iterations=20, spectral="lanczos",
                                                      spectral_iters=48))
        except ValueError:
            refined.append(float("nan"))
    snaps = solve(x, np.asarray(snapshot_betas), grid, iteration=Damped.paper(), key=key,
                  record_every=1, throw=False)
    trajectory = snaps.trajectory
    assert trajectory is not None   # record_every=1
    snapshots = [(float(b), np.asarray(trajectory[j]), np.asarray(snaps.psi[j]))
                 for j, b in enumerate(snapshot_betas)]
    return Figure3Data(x=x, sweep=res, peaks=peaks, refined=refined, snapshots=snapshots, variable=variable)


def plot_figure3(data: Figure3Data, max_tracks: int = 400):
    """The matplotlib Figure: top row snapshots, bottom u(β) and u''(β).

    β that did not converge are left out of the curves (their u, u′, u″ are not
    those of a fixed point) and marked with grey crosses on the u panel; the
    curvature by finite differences also leaves out the points next to them.
    The vertical lines are at the refined β_c (``data.refined``), or at the
    sweep's peak, dashed, where refinement failed (NaN)."""
    import matplotlib.pyplot as plt

    ns = len(data.snapshots)
    fig = plt.figure(figsize=(3.2 * ns, 7.2))
    gs = fig.add_gridspec(2, 2 * ns, height_ratios=[1, 1.1])
    rng = np.random.default_rng(0)
    for j, (beta, traj, psi) in enumerate(data.snapshots):
        ax = fig.add_subplot(gs[0, 2 * j: 2 * j + 2])
        tracks = rng.choice(traj.shape[1], min(max_tracks, traj.shape[1]), replace=False)
        for a in tracks:
            ax.plot(traj[:, a, 0], traj[:, a, 1], color="0.6", lw=0.4, alpha=0.6)
        ax.scatter(data.x[:, 0], data.x[:, 1], s=6, color="tab:blue", zorder=3)
        ax.scatter(psi[:, 0], psi[:, 1], s=14, color="tab:red", zorder=4)
        ax.set_title(f"β = {beta:.2g}")
        ax.set_xlim(-0.55, 0.55)
        ax.set_ylim(-0.55, 0.55)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    ax_u = fig.add_subplot(gs[1, :ns])
    ax_d = fig.add_subplot(gs[1, ns:])
    shown = draw_order_parameter(ax_u, ax_d, data.sweep, [(p.beta, rb) for p, rb in zip(data.peaks, data.refined)],
                                 data.variable)
    ax_u.set_title("top-%d β_c, refined: " % len(data.peaks) + ", ".join(shown), fontsize=9)
    fig.tight_layout()
    return fig


def figure3(out_path: str | None = None, **kwargs):
    """Compute and draw Figure 3; save to ``out_path`` if given. Returns (Figure, Figure3Data)."""
    data = compute_figure3(**kwargs)
    fig = plot_figure3(data)
    if out_path:
        fig.savefig(out_path, dpi=110)
    return fig, data


def figure3_command(args) -> int:
    """``vaefp figure 3``: writes figure3.<format>, figure3_sweep.npz and figure3_peaks.json; exit code 3
    under ``--strict`` when some β did not converge."""
    import matplotlib

    matplotlib.use("Agg")
    jax.config.update("jax_enable_x64", True)
    prepare_out(args.out)
    kw = dict(seed=args.seed)
    if args.small:
        kw.update(k=12, betas=np.geomspace(1e-4, 1.0, 32), x=datasets.three_clusters(60, seed=args.seed))
    png = os.path.join(args.out, f"figure3.{getattr(args, 'format', 'png')}")
    fig, data = figure3(png, **kw)
    res = data.sweep
    np.savez_compressed(os.path.join(args.out, "figure3_sweep.npz"), beta=res.beta, u=res.u, du=res.du,
                        d2u=res.d2u, steps=res.steps, converged=res.converged,
                        spectral_radius=res.spectral_radius, distinct=res.distinct, x=data.x)
    peaks = [dict(dataclasses.asdict(p), refined_beta=rb) for p, rb in zip(data.peaks, data.refined)]
    with open(os.path.join(args.out, "figure3_peaks.json"), "w") as f:
        json.dump(peaks, f, indent=2)
    print(f"{'β_c (sweep)':>12} {'refined':>10} {'|u″| peak':>10} {'jump':>5} {'fixed pts below/above':>22}")
    for p in peaks:
        print(f"{p['beta']:12.4g} {p['refined_beta']:10.4g} {p['height']:10.3g} {p['jump']!s:>5} "
              f"{p['fixed_points_below']:>11d}/{p['fixed_points_above']:<10d}")
    bad = int((~res.converged).sum())
    if bad:
        print(f"WARNING: {bad} of {res.beta.size} β did not converge; they are left out of the curvature "
              "curves and the peak search", file=sys.stderr)
    print(f"wrote {png}")
    return EXIT_NOT_CONVERGED if bad and getattr(args, "strict", False) else 0
