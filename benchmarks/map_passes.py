"""Where one evaluation of the one-exponential map spends its time (issue 16).

    python benchmarks/map_passes.py [--num-betas 64] [--loop map|vmap] [--repeats 3]

Figure 3's setting (n = 120 three-cluster points, 32×32 tiles, K = 1024, d = 2,
float32): ``--num-betas`` β log-spaced in [1e-4, 1], each iterated exactly 400
damped steps (ψ ← 0.9 F(ψ) + 0.1 ψ, ``fori_loop``) from the same ψ⁰, under
``lax.map`` over β (one β at a time, as ``solve``'s pool runs at this size) or
``vmap``. Rows, each the same loop around a different evaluation F:

* ``reused_shifts``: ``DenseMap().evaluate_warm`` as ``solve`` runs it: the previous
  evaluation's log c_i and log Σ_i m_ib as the shifts (one pass over the pairs: the
  logits, E, the two products), recomputed by the maxima where out of range;
* ``one_exponential``: ``vaefp_jax.equations.evaluate``, the shifts from the row
  maxima M and the column maxima r every step (XLA fuses the logits into each of the
  three consumers: M, r, E);
* ``barrier``: the same with the (K, n) logits materialised once
  (``lax.optimization_barrier``), so the two maxima and E read them instead of
  recomputing the distances;
* ``data_first``: the same arithmetic in the (n, K) layout;
* ``log_space``: ``equations.evaluate_log_space``, two exponentials per pair;
* ``exp_only``: the logits, one exponential and one product, **no shifts** — not a
  safe map (it overflows or gives 0/0 for small β); it measures what one pass over
  the pairs costs here, the floor any safe one-exponential form can approach.

Prints µs per evaluation (wall time / (B × 400), best of ``--repeats``, compilation
excluded) and each row's largest difference from the first (float32 rounding
amplified over 400 steps: near-critical β drift apart, so a difference of ~1e-2 is
not an error of the form; tests/test_reused_shifts.py checks single evaluations).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import vaefp_jax as vf

vf.native.ensure_built()   # tracing never builds the CPU kernel: build it before anything is jitted
from vaefp_jax import equations as eq

sys.path.insert(0, os.path.dirname(__file__))
from sweep import cpu_description  # noqa: E402


def forms(x, lp):
    n = x.shape[0]

    def one_exponential(psi, beta):
        return eq.evaluate(psi, x, beta, lp).psi

    def barrier(psi, beta):
        logits = jax.lax.optimization_barrier(eq.tile_logits(psi, x, beta))      # (K, n)
        M = jnp.max(logits + lp[:, None], axis=0)
        t = logits - M[None, :]
        r = jnp.max(t, axis=1)
        E = jnp.exp(t - r[:, None])
        inv = 1.0 / (jnp.exp(lp + r) @ E)
        sums = E @ jnp.concatenate([x * inv[:, None], inv[:, None]], axis=1)
        return sums[:, :-1] / sums[:, -1:]

    def data_first(psi, beta):
        logits = eq.tile_logits(psi, x, beta).T                                 # (n, K)
        M = jnp.max(logits + lp[None, :], axis=1)
        t = logits - M[:, None]
        r = jnp.max(t, axis=0)
        E = jnp.exp(t - r[None, :])
        inv = 1.0 / (E @ jnp.exp(lp + r))
        sums = jnp.concatenate([x * inv[:, None], inv[:, None]], axis=1).T @ E   # (d + 1, K)
        return (sums[:-1] / sums[-1:]).T

    def log_space(psi, beta):
        return eq.evaluate_log_space(psi, x, beta, lp).psi

    def exp_only(psi, beta):
        E = jnp.exp(eq.tile_logits(psi, x, beta))
        sums = E @ jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
        return sums[:, :-1] / (sums[:, -1:] + 1e-30)

    return dict(one_exponential=one_exponential, barrier=barrier, data_first=data_first,
                log_space=log_space, exp_only=exp_only)


def warm_loop(x, lp, psi0, steps):
    """One β's ``steps`` damped steps of ``DenseMap().evaluate_warm``, its state carried."""
    dense = vf.DenseMap()

    def one(beta):
        def body(i, carry):
            p, state = carry
            value, state = dense.evaluate_warm(p, x, beta, lp, state)
            return 0.9 * value.psi + 0.1 * p, state

        state0 = dense.init_state(x.shape[0], psi0.shape[0], psi0.dtype)
        return jax.lax.fori_loop(0, steps, body, (psi0, state0))[0]

    return one


def figure3_problem(num_betas):
    """Figure 3's setting in float32: x (120, 2) three clusters, log π (1024,) of the 32×32
    grid, ψ⁰ (1024, 2) the grid jittered by U(−0.1, 0.1), β (num_betas,) log-spaced in [1e-4, 1]."""
    x = jnp.asarray(vf.datasets.three_clusters(120, seed=0), jnp.float32)
    grid = vf.LatentGrid.uniform(32)
    lp = jnp.asarray(grid.log_prior, jnp.float32)
    rng = np.random.default_rng(0)
    psi0 = jnp.asarray(np.asarray(grid.z) + rng.uniform(-0.1, 0.1, np.shape(grid.z)), jnp.float32)
    return x, lp, psi0, jnp.asarray(np.geomspace(1e-4, 1.0, num_betas), jnp.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-betas", type=int, default=64)
    ap.add_argument("--loop", choices=["map", "vmap"], default="map")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args(argv)
    x, lp, psi0, betas = figure3_problem(args.num_betas)
    B, steps = args.num_betas, args.steps
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_description()}, jax {jax.__version__}; n = 120, K = 1024, d = 2, "
          f"float32, {B} β × {steps} steps, lax.{args.loop} over β")
    print("| evaluation | wall s | µs / evaluation | max |ψ − ψ(first row)| |")
    print("|---|---|---|---|")
    ref = None
    loops = {"reused_shifts": warm_loop(x, lp, psi0, steps)}
    for name, ev in forms(x, lp).items():
        loops[name] = (lambda beta, ev=ev: jax.lax.fori_loop(0, steps, lambda i, p: 0.9 * ev(p, beta) + 0.1 * p,
                                                              psi0))
    for name, one in loops.items():
        f = jax.jit(lambda b, one=one: jax.lax.map(one, b) if args.loop == "map" else jax.vmap(one)(b))
        out = f(betas).block_until_ready()
        best = np.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            f(betas).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        ref = out if ref is None else ref
        diff = "(not a safe map)" if name == "exp_only" else f"{float(jnp.max(jnp.abs(out - ref))):.1e}"
        print(f"| {name} | {best:.3f} | {best / (B * steps) * 1e6:.1f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
