"""Registries of the engine's strategies, and a NumPy float64 reference of the maps they iterate.

Every valid iteration × step map × constraint × schedule combination is run by
the shared tests of tests/test_engine.py. Adding a map, an iteration, a
constraint or a schedule is one line here (plus its own module).
"""

from __future__ import annotations

import itertools

import numpy as np
from toy_map import ToyMap

import vaefp_jax as vf

MAPS = {
    "dense": vf.DenseMap(),
    "blocked": vf.BlockedMap(tile_chunk=4, data_chunk=8),     # chunks that do not divide K = 9, n = 20
    "pallas": vf.PallasMap(data_block=8, tile_block=4, interpret=True),
    "toy": ToyMap(),                                           # defined in the tests only (tests/toy_map.py)
}
ITERATIONS = {
    "damped": vf.Damped(damping=0.0, tol=1e-12, max_steps=5000),
    # few rounds and Lanczos steps (K d = 18 here: exact), to keep its compilation small
    "accelerated": vf.Accelerated(tol=1e-12, warmup=20, max_newton=10, rounds=1, spectral_iters=18,
                                  fallback_steps=2000),
}
CONSTRAINTS = {
    "none": vf.Unconstrained(),
    "strength": vf.LipschitzStrength(strength=(0.02, 0.05, 0.1), support="local", r=0.4),
    "bound": vf.LipschitzBound(L=(3.0, 2.0, 1.5), support="local", r=0.4),
}
SCHEDULES = {
    "pool": vf.Pool(width=2),              # B = 3: a slot is refilled
    "mapped": vf.Vmapped(batch_size=1),    # one problem at a time (lax.map); inside the tests'
                                           # jit(vmap) over data sets it is vmapped too. Chunks of
                                           # several vmapped β: tests/test_schedule.py
}


def is_valid(iteration, constraint, schedule) -> bool:
    """The combinations the engine accepts (the others get a ValueError, tested)."""
    if isinstance(iteration, vf.Accelerated):
        return (isinstance(constraint, vf.Unconstrained) and isinstance(schedule, vf.Vmapped)
                and schedule.batch_size == 1)
    return True


def combinations():
    """(id, iteration, step_map, constraint, schedule) for every valid combination."""
    out = []
    for (i, it), (m, sm), (c, con), (s, sch) in itertools.product(
            ITERATIONS.items(), MAPS.items(), CONSTRAINTS.items(), SCHEDULES.items()):
        if is_valid(it, con, sch):
            out.append((f"{i}-{m}-{c}-{s}", it, sm, con, sch))
    return out


def invalid_combinations():
    out = []
    for (i, it), (c, con), (s, sch) in itertools.product(ITERATIONS.items(), CONSTRAINTS.items(), SCHEDULES.items()):
        if not is_valid(it, con, sch):
            out.append((f"{i}-{c}-{s}", it, con, sch))
    return out


# --------------------------------------------------------------------------- NumPy float64 reference


def ref_map(psi, x, beta, log_prior):
    """Eq. (14)–(15) in float64 NumPy: (F(ψ), s̄) with s̄ the aggregate posterior."""
    psi, x = np.asarray(psi, np.float64), np.asarray(x, np.float64)
    lp = np.asarray(log_prior, np.float64)
    logits = -((x[:, None, :] - psi[None, :, :]) ** 2).sum(-1) / (2 * beta)          # (n, K)
    a = logits + lp[None, :]
    log_c = a.max(1, keepdims=True) + np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True))
    log_m = logits - log_c
    w = np.exp(log_m - log_m.max(0, keepdims=True))
    w /= w.sum(0, keepdims=True)
    q = np.exp(log_m + lp[None, :])
    return w.T @ x, q.mean(0)


def ref_project(psi_f, s_bar, W):
    """ψ = (diag(s̄) + 2 Lap(W))⁻¹ diag(s̄) F (Proposition 6, corrected), float64."""
    lap = np.diag(W.sum(1)) - W
    return np.linalg.solve(np.diag(s_bar) + 2 * lap, s_bar[:, None] * psi_f) if np.any(W) else psi_f


def ref_target(psi, x, beta, grid, constraint, index, stats):
    """The target G(ψ) of problem ``index`` in float64: F, or its projection with the
    multipliers the constraint reports (the bound mode's Ω̃ from the solve)."""
    F, s_bar = ref_map(psi, x, beta, grid.log_prior)
    if isinstance(constraint, vf.Unconstrained):
        return F
    C = vf.constraints.lipschitz_coefficients(grid, 1.0 if isinstance(constraint, vf.LipschitzBound)
                                              else constraint.L, constraint.weighting)
    mask = vf.constraints.support_mask(grid, constraint.support, constraint.r)
    if isinstance(constraint, vf.LipschitzStrength):
        W = constraint.strength[index] * np.where(mask, C, 0.0)
    else:
        L = constraint.L[index]
        omega = np.asarray(stats["omega"][index], np.float64)
        W = omega * C / L**2
        W = 0.5 * (W + W.T)
    return ref_project(F, s_bar, W)


def problem(n: int = 20, k: int = 3, seed: int = 0):
    """A small problem: n points of three clusters, a k × k grid, three β away from transitions."""
    x = vf.datasets.three_clusters(n, seed=seed)
    return x, vf.LatentGrid.uniform(k), np.array([0.004, 0.01, 0.03])
