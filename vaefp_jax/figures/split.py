"""Figures of the reduced phase analysis (:class:`vaefp_jax.phase.split_result.SplitResult`)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_split_phase", "plot_split_tree"]


def _beta_lines(ax, result, label: bool = False):
    labelled = set()
    for s in result.splits:
        kind = "exact β_c" if s.exact else "split on arrival"
        ax.axvline(s.beta_c, color="tab:red" if s.exact else "tab:orange", lw=0.6, alpha=0.6,
                   ls="-" if s.exact else "--", label=kind if label and kind not in labelled else None)
        labelled.add(kind)


def plot_split_phase(result):
    """u, u′ and u″ of the cross-check sweep against β (log axis), one colour per level, with
    the exact β_c as vertical lines (dashed: splits on arrival). u′ jumps and u″ peaks where the
    lines are: the paper's detection and the exact roots agree."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7.2, 7.2), sharex=True)
    b, lev = result.sweep_beta, result.sweep_level
    cmap = plt.get_cmap("viridis")
    nlev = max(len(result.levels), 1)
    for k in np.unique(lev):
        sel = lev == k
        c = cmap(k / nlev)
        for ax, y in zip(axes, (result.sweep_u, result.sweep_du, np.abs(result.sweep_d2u))):
            ax.plot(b[sel], y[sel], ".-", color=c, ms=2, lw=0.8)
    for i, ax in enumerate(axes):
        _beta_lines(ax, result, label=i == 0)
        ax.set_xscale("log")
    top = np.nanmax(np.abs(result.sweep_d2u)) if np.any(np.isfinite(result.sweep_d2u)) else 0.0
    if top > 0:   # |u″| on a log axis down to 1e-6 of its largest value (0 above the first split)
        axes[2].set_yscale("log")
        axes[2].set_ylim(top * 1e-6, top * 3)
    axes[0].set_ylabel("u (eq. 3)")
    axes[1].set_ylabel("u′ = du/dβ")
    axes[2].set_ylabel("|u″|")
    axes[2].set_xlabel("β")
    exact = sum(s.exact for s in result.splits)
    axes[0].set_title(f"{result.x.shape[0]} points in {result.x.shape[1]}-D: {len(result.splits)} splits "
                      f"({exact} exact roots); colour = level", fontsize=9)
    if result.splits:
        axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_split_tree(result, max_leaves: int = 40):
    """The split tree as a dendrogram (SciPy), height β_c on a log axis; the most persistent level
    and the scored level marked."""
    import matplotlib.pyplot as plt

    from vaefp_jax.figures.phase import draw_dendrogram

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    draw_dendrogram(ax, result.tree, max_leaves, "β (split height β_c)")
    p = result.levels[result.persistent_level]
    ax.axhspan(p.beta_low, p.beta_high, color="tab:green", alpha=0.12,
               label=f"most persistent level: {p.clusters} clusters")
    score = result.score()
    if score is not None:
        ax.axhline(score["beta_read"], color="tab:purple", lw=0.8,
                   label=f"{score['clusters']} clusters ({score['significant']} significant): ARI {score['ari']:.3f}")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"split tree: {len(result.splits)} splits from β = {result.splits[0].beta_c:.4g}" if result.splits
                 else "split tree: no split", fontsize=9)
    fig.tight_layout()
    return fig
