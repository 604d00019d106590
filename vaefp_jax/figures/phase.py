"""Figures of a phase analysis: u(β) and its curvature with the β_c, and the merge tree.

:func:`draw_order_parameter` is shared with Figure 3: β that did not converge
are left out of the curves (their u, u′, u″ are not those of a fixed point) and
marked with grey crosses on the u panel; the finite-difference curvature also
leaves out the points next to them; vertical lines sit at the refined β_c, or,
dashed, at the sweep's peak where refinement failed.
"""

from __future__ import annotations

import numpy as np

from vaefp_jax.phase.critical import curvature

__all__ = ["draw_order_parameter", "plot_phase", "plot_tree"]


def draw_order_parameter(ax_u, ax_d, result, lines, variable: str = "log_beta") -> list[str]:
    """u(β) on ``ax_u`` and the curvature in ``variable`` on ``ax_d`` for a sweep ``result``
    (beta, u, du, d2u, converged); ``lines``: (sweep β, refined β_c or NaN) pairs. Returns the
    labels of the lines drawn ("0.0123" or "0.0123 (unrefined)")."""
    order = np.argsort(result.beta)
    beta = result.beta[order]
    ok = np.asarray(result.converged)[order]
    ok_fd = ok.copy()
    ok_fd[1:-1] &= ok[:-2] & ok[2:]   # the three-point difference needs both neighbours
    ax_u.semilogx(beta[ok], result.u[order][ok], "k.-", ms=3)
    if not ok.all():
        ax_u.semilogx(beta[~ok], result.u[order][~ok], "x", color="0.5", ms=5,
                      label=f"not converged ({int((~ok).sum())} β)")
        ax_u.legend(fontsize=7, loc="lower right")
    ax_u.set_xlabel("β")
    ax_u.set_ylabel("u(β) = E‖x − g(z)‖²")
    pointwise, fd = curvature(result, variable)
    pointwise, fd = np.where(ok, pointwise, np.nan), np.where(ok_fd, fd, np.nan)
    floor = max(np.nanmax(pointwise) if ok.any() else 0.0, 1e-30) * 1e-6
    ax_d.loglog(beta, np.maximum(pointwise, floor), "k.-", ms=3, label="implicit (pointwise)")
    ax_d.loglog(beta, np.maximum(fd, floor), color="tab:orange", lw=0.8, alpha=0.8,
                label="finite differences of the sweep")
    ax_d.set_xlabel("β")
    ax_d.set_ylabel("|∂²u/∂(ln β)²|" if variable == "log_beta" else "|∂²u/∂β²|")
    ax_d.legend(fontsize=7, loc="lower left")
    shown = []
    for at_sweep, rb in lines:
        refined = rb is not None and np.isfinite(rb)
        at = float(rb) if refined else float(at_sweep)
        shown.append(f"{at:.3g}" if refined else f"{at:.3g} (unrefined)")
        for ax in (ax_u, ax_d):
            ax.axvline(at, color="0.5", lw=1, ls="-" if refined else "--")
    return shown


def plot_phase(result):
    """u(β) and |∂²u/∂(ln β)²| of a :class:`~vaefp_jax.PhaseResult`, β_c lines at the refined values."""
    import matplotlib.pyplot as plt

    fig, (ax_u, ax_d) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    shown = draw_order_parameter(ax_u, ax_d, result, [(c.beta, c.refined) for c in result.critical])
    ax_u.set_title(f"{result.x.shape[0]} points in {result.x.shape[1]}-D; β_c: " + (", ".join(shown) or "none"),
                   fontsize=9)
    fig.tight_layout()
    return fig


def draw_dendrogram(ax, tree, max_leaves: int, ylabel: str) -> None:
    """SciPy's dendrogram of ``tree`` (a MergeTree) on ``ax``, β on a log axis, the lowest
    branches collapsed to ``max_leaves`` leaves labelled by their number of points."""
    from scipy.cluster.hierarchy import dendrogram

    n = tree.labels.shape[1]
    dendrogram(tree.linkage, ax=ax, truncate_mode="lastp", p=min(max_leaves, n), color_threshold=0,
               above_threshold_color="k", no_labels=n > 60 and max_leaves > 60)
    ax.set_yscale("log")
    ax.set_ylim(tree.beta[0] * 0.8, tree.beta[-1] * 1.25)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(f"clusters (leaf label: number of points, of {n})")


def plot_tree(result, max_leaves: int = 40):
    """The merge tree as a dendrogram, height β on a log axis (SciPy's ``dendrogram``; the
    lowest ``max_leaves`` branches are collapsed, with their number of points as the leaf label).
    Merges with a refined β_c are at that height; the others at their bracket's midpoint."""
    import matplotlib.pyplot as plt

    tree = result.tree
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    draw_dendrogram(ax, tree, max_leaves, "β (merge height)")
    for c in result.critical:
        if np.isfinite(c.refined):
            ax.axhline(c.refined, color="tab:blue", lw=0.6, alpha=0.5)
    title = f"merge tree: {int(tree.counts[0])} clusters at β = {tree.beta[0]:.3g} → {int(tree.counts[-1])} " \
            f"at β = {tree.beta[-1]:.3g}"
    if not tree.complete:
        title += " (not merged into one within the sweep)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
