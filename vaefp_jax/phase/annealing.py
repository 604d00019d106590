r"""The split tree of a data set by continuation on cooling of the reduced fixed point.

Start above λ_max(Cov) with one cluster (ψ = mean, γ = 1). On the current branch of m
distinct fixed points every cluster a has its critical temperature, the root of

    g_a(β) = λ_max(C_a(β)) − β          (:func:`vaefp_jax.phase.reduced.critical_temperature`)

along the branch (C_a is re-solved at each trial β: the clusters move as β falls). The
largest root below the current β is the next split: it is bracketed by geometric steps down
(the branch re-solved from the previous point at each step; a split that lies within one
step of the previous one is found by checking the step's lower end first), then located
by bisection in ln β to ``beta_rtol``. That cluster is replaced by two half-mass copies at ψ_a ± ε v (v its
splitting direction, ε from the pitchfork's normal form: the split amplitude grows like
√(β_c − β)), one split at a time, so that every level of the tree is a β interval of its own.
Copies that fall back together on the next solve are merged again and the search goes on
below.

This is the second piece of issue 34's reduced phase analysis: it gives the splits (β_c,
parent, children, masses, direction) and the levels; labels, the command line and the
accelerated solve of the branch come next. The branch is solved by plain steps
(:func:`~vaefp_jax.phase.reduced.solve_reduced`), which slow down near every β_c.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from vaefp_jax.clusters import rms_spread
from vaefp_jax.phase.reduced import critical_temperature, log_posterior, solve_reduced

__all__ = ["Level", "Split", "SplitTree", "anneal"]


@dataclasses.dataclass(frozen=True)
class Split:
    """Cluster ``parent`` (a node id) splits at ``beta`` into ``children`` (two new node ids)
    with masses ``masses`` just below, along ``direction`` (d,), the top eigenvector of C_a."""

    beta: float
    parent: int
    children: tuple[int, int]
    masses: tuple[float, float]
    direction: np.ndarray


@dataclasses.dataclass(frozen=True)
class Level:
    """The branch between two splits: ``beta_high`` (the split above; inf for the root) down to
    ``beta_low`` (the next split, or where the annealing stopped); ``nodes`` (m,) the node ids of
    its clusters, ``psi`` (m, d) and ``log_mass`` (m,) solved at ``beta_read``."""

    beta_high: float
    beta_low: float
    beta_read: float
    nodes: tuple[int, ...]
    psi: np.ndarray
    log_mass: np.ndarray


@dataclasses.dataclass(frozen=True)
class SplitTree:
    """The splits in descending β and the levels between them (level k has k + 1 clusters)."""

    splits: tuple[Split, ...]
    levels: tuple[Level, ...]

    def labels(self, x, level: int) -> np.ndarray:
        """(n,) the node id of the most probable cluster of every point at ``level``."""
        lev = self.levels[level]
        log_p = log_posterior(jnp.asarray(lev.psi), jnp.asarray(lev.log_mass), jnp.asarray(x), lev.beta_read)
        return np.asarray(lev.nodes)[np.argmax(np.asarray(log_p), axis=1)]


def _instability(psi, log_mass, x, beta):
    """(max_a λ_max(C_a)/β − 1, the cluster, its λ and direction) at a solved point."""
    best = None
    for a in range(psi.shape[0]):
        lam, v = critical_temperature(psi, log_mass, x, beta, a)
        if best is None or float(lam) > best[1]:
            best = (a, float(lam), np.asarray(v))
    a, lam, v = best
    return lam / beta - 1.0, a, lam, v


def anneal(x, *, max_clusters: int = 10, beta_min: float | None = None, step: float = 0.9,
           split_step: float = 0.98, beta_rtol: float = 1e-11, max_steps: int = 200_000,
           merge_tol: float | None = None) -> SplitTree:
    """The split tree of ``x`` (n, d) down to ``max_clusters`` clusters or ``beta_min``.

    ``step``: the factor of the geometric steps that bracket the next split; ``split_step``: a
    split is followed onto its branch at β_c × split_step (close below β_c, so that the copies
    follow the pitchfork rather than run to another fixed point); ``beta_rtol``: the
    bisection's relative width; ``merge_tol``: distance under which two copies count as fallen
    back together (default 1e-3 × the data's RMS spread). Float64 recommended (JAX x64)."""
    x = jnp.asarray(x)
    xs = np.asarray(x, np.float64)
    spread = rms_spread(xs)
    if spread == 0:
        raise ValueError("all points are the same point: there is nothing to split")
    merge_tol = 1e-3 * spread if merge_tol is None else float(merge_tol)
    lam0 = float(np.linalg.eigvalsh(np.atleast_2d(np.cov(xs.T, bias=True))).max())
    beta_min = 1e-6 * lam0 if beta_min is None else float(beta_min)

    def solve_at(beta, state):
        r = solve_reduced(x, np.array([beta]), *state, max_steps=max_steps)
        return np.asarray(r.psi[0]), np.asarray(r.log_mass[0])

    def unstable(beta, state):
        return _instability(jnp.asarray(state[0]), jnp.asarray(state[1]), x, beta)

    state = (xs.mean(0)[None], np.zeros(1))   # one cluster: C = Cov at every β, so β_c = λ_max(Cov) exactly
    nodes, next_id, splits, levels = [0], 1, [], []
    level_high, read = np.inf, (lam0, state)
    beta_c = lam0
    _, a, lam, v = unstable(lam0, state)
    while True:
        if len(nodes) >= max_clusters or beta_c <= beta_min:
            levels.append(Level(level_high, beta_c, read[0], tuple(nodes), *read[1]))
            break
        # split cluster a at β_c along v, half its mass to each copy, and solve a little below
        psi, lm = (np.array(t) for t in state)
        below = beta_c * split_step
        amp = np.sqrt(max(lam - below, 0.0) + 1e-12 * lam)
        psi = np.concatenate([psi, psi[a:a + 1] - amp * v])
        psi[a] += amp * v
        lm = np.concatenate([lm, lm[a:a + 1] - np.log(2.0)])
        lm[a] -= np.log(2.0)
        psi, lm = solve_at(below, (psi, lm))
        if np.linalg.norm(psi[a] - psi[-1]) < merge_tol:          # fell back together: undo, go on below
            lm[a] = np.logaddexp(lm[a], lm[-1])
            state = (np.delete(psi, -1, 0), np.delete(lm, -1))
        else:
            levels.append(Level(level_high, beta_c, read[0], tuple(nodes), *read[1]))
            children = (next_id, next_id + 1)
            splits.append(Split(beta_c, nodes[a], children, (float(np.exp(lm[a])), float(np.exp(lm[-1]))), v))
            nodes = nodes[:a] + [children[0]] + nodes[a + 1:] + [children[1]]
            next_id, level_high, state = next_id + 2, beta_c, (psi, lm)
        # the next split: in (below, β_c] already if another cluster is unstable at `below`
        # (splits closer than one step), else bracketed below by geometric steps; then
        # bisection in ln β on the branch
        if unstable(below, state)[0] >= 0:
            hi, lo = beta_c, below
        else:
            hi, lo = below, None
            while hi > beta_min:
                trial = hi * step
                trial_state = solve_at(trial, state)
                if unstable(trial, trial_state)[0] >= 0:
                    lo = trial
                    break
                hi, state = trial, trial_state
            if lo is None:
                levels.append(Level(level_high, beta_min, hi, tuple(nodes), *state))
                break
        while hi / lo - 1 > beta_rtol:
            mid = float(np.sqrt(hi * lo))
            mid_state = solve_at(mid, state)
            if unstable(mid, mid_state)[0] >= 0:
                lo = mid
            else:
                hi, state = mid, mid_state
        state = solve_at(hi, state)
        beta_c = float(np.sqrt(hi * lo))
        _, a, lam, v = unstable(hi, state)
        read = (hi, state)
    return SplitTree(tuple(splits), tuple(levels))
