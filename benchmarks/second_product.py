"""Where the one-pass map's remaining time goes: the second product c̃ = g @ E (issue 16).

    python benchmarks/second_product.py --part split      # what each piece of one evaluation adds
    python benchmarks/second_product.py --part c_forms    # c̃ written five ways
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false python benchmarks/second_product.py --part split

Figure 3's setting as in ``benchmarks/map_passes.py``: n = 120 three-cluster points, K = 1024
tiles, d = 2, float32, 64 β × 400 damped steps (ψ ← 0.9 F(ψ) + 0.1 ψ) under ``lax.map`` over β.
The rows alternate within one run (best of the repeats, compilation excluded), µs per evaluation.

``split`` rows (none but the first is a safe map; they measure cost, not values):

* ``reused_shifts``: ``DenseMap().evaluate_warm``, what ``solve`` runs;
* ``exp_only``: the logits, E = exp(ℓ), one product E @ [x, 1];
* ``exp_materialised``: the same with E written to memory (``optimization_barrier``);
* ``two_products_independent``: ``exp_only`` plus c̃ = g @ E, not used by the first product;
* ``two_products_dependent``: the shipped arithmetic without shifts, range check or fallback:
  c̃ = g @ E, then E @ [x/c̃, 1/c̃].

``c_forms``: ``two_products_dependent`` with c̃ as ``g @ E``, ``(g[None] @ E)[0]``,
``dot_general`` contracting E's first axis, ``sum(g[:, None] * E, 0)``, in the (n, K) layout
(``Eᵀ @ g``), as a two-column product, and without c̃ (a bound).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import equations as eq

sys.path.insert(0, os.path.dirname(__file__))
from map_passes import figure3_problem, warm_loop  # noqa: E402
from sweep import cpu_description  # noqa: E402


def split_rows(x, lp, psi0, steps):
    n = x.shape[0]
    xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    g = jnp.exp(lp)

    def exp_only(p, beta):
        E = jnp.exp(eq.tile_logits(p, x, beta))
        s = E @ xa
        return s[:, :-1] / (s[:, -1:] + 1e-30)

    def exp_materialised(p, beta):
        E = jax.lax.optimization_barrier(jnp.exp(eq.tile_logits(p, x, beta)))
        s = E @ xa
        return s[:, :-1] / (s[:, -1:] + 1e-30)

    def two_products_independent(p, beta):
        E = jnp.exp(eq.tile_logits(p, x, beta))
        s = E @ xa
        c = g @ E
        return s[:, :-1] / (s[:, -1:] + 1e-30) + 0.0 * jnp.sum(c)

    def two_products_dependent(p, beta):
        E = jnp.exp(eq.tile_logits(p, x, beta))
        c = g @ E
        inv = 1.0 / (c + 1e-30)
        s = E @ (xa * inv[:, None])
        return s[:, :-1] / (s[:, -1:] + 1e-30)

    return dict(exp_only=exp_only, exp_materialised=exp_materialised,
                two_products_independent=two_products_independent, two_products_dependent=two_products_dependent)


def c_form_rows(x, lp):
    n = x.shape[0]
    xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    g = jnp.exp(lp)

    def mk(cfun, layout="Kn"):
        def ev(p, beta):
            L = eq.tile_logits(p, x, beta)
            if layout == "Kn":
                E = jnp.exp(L)
                c = cfun(E)
                inv = 1.0 / (c + 1e-30)
                s = E @ (xa * inv[:, None])
            else:
                Et = jnp.exp(L.T)
                c = cfun(Et)
                inv = 1.0 / (c + 1e-30)
                s = jax.lax.dot_general(Et, xa * inv[:, None], (((0,), (0,)), ((), ())))
            return s[:, :-1] / (s[:, -1:] + 1e-30)
        return ev

    return {"g @ E": mk(lambda E: g @ E),
            "(g[None] @ E)[0]": mk(lambda E: (g[None, :] @ E)[0]),
            "dot_general contracting axis 0": mk(lambda E: jax.lax.dot_general(E, g, (((0,), (0,)), ((), ())))),
            "sum(g[:, None] * E, 0)": mk(lambda E: jnp.sum(g[:, None] * E, axis=0)),
            "(n, K) layout, Eᵀ @ g": mk(lambda Et: Et @ g, "nK"),
            "two-column product": mk(lambda E: (jnp.stack([g, jnp.zeros_like(g)], 1).T @ E)[0]),
            "no c̃ (a bound)": mk(lambda E: jnp.ones((n,), E.dtype))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["split", "c_forms"], default="split")
    ap.add_argument("--num-betas", type=int, default=64)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    x, lp, psi0, betas = figure3_problem(args.num_betas)
    B, steps = args.num_betas, args.steps
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_description()}, jax {jax.__version__}, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; n = 120, K = 1024, d = 2, float32, {B} β × {steps} steps")
    if args.part == "split":
        loops = {"reused_shifts": warm_loop(x, lp, psi0, steps)}
        forms = split_rows(x, lp, psi0, steps)
    else:
        loops, forms = {}, c_form_rows(x, lp)
    for name, ev in forms.items():
        loops[name] = lambda beta, ev=ev: jax.lax.fori_loop(0, steps, lambda i, p: 0.9 * ev(p, beta) + 0.1 * p, psi0)
    fs = {k: jax.jit(lambda b, one=one: jax.lax.map(one, b)) for k, one in loops.items()}
    for f in fs.values():
        f(betas).block_until_ready()
    best = {k: np.inf for k in fs}
    for _ in range(args.repeats):
        for k, f in fs.items():
            t0 = time.perf_counter()
            f(betas).block_until_ready()
            best[k] = min(best[k], time.perf_counter() - t0)
    print("| row | µs / evaluation |\n|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v / (B * steps) * 1e6:.1f} |")


if __name__ == "__main__":
    main()
