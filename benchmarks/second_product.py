"""Where the one-pass map's remaining time goes: the second product c̃ = g @ E (issue 16).

    python benchmarks/second_product.py --part split      # what each piece of one evaluation adds
    python benchmarks/second_product.py --part c_forms    # c̃ written five ways
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false python benchmarks/second_product.py --part split
    python benchmarks/second_product.py --part loop       # solve's loop against the bare one

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

``loop``: ``evaluate_warm`` in a bare ``fori_loop`` from the jittered grid (the ``split`` row),
the same from ``initial_psi`` (what ``benchmarks/floor.py`` starts from), in a ``while_loop``
with the residual ‖ψ' − ψ‖ as ``Damped`` runs it, the same with x and log π passed to the
jitted function instead of closed over (constants XLA may fold), and ``solve``'s own program
(``engine.solve.run`` with ``benchmarks/floor.py``'s ``ExactSteps``): where the time between
the map and the solver goes.
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


def loop_rows(x, lp, psi_jittered, betas, steps):
    """(B,) β → ψ programs: the bare loop, the same from ``initial_psi``, Damped's
    ``while_loop`` with its residual, and ``solve``'s compiled program."""
    from floor import exact_steps

    grid = vf.LatentGrid.uniform(32)
    psi_f = jnp.asarray(vf.initial_psi(x, grid), jnp.float32)

    def warm_while(beta, x=x, lp=lp):
        dense = vf.DenseMap()

        def body(c):
            p, st, t, _ = c
            v, st = dense.evaluate_warm(p, x, beta, lp, st)
            new = 0.9 * v.psi + 0.1 * p
            return new, st, t + 1, jnp.sqrt(jnp.sum((new - p) ** 2))

        st0 = dense.init_state(x.shape[0], psi_f.shape[0], psi_f.dtype)
        init = (psi_f, st0, jnp.int32(0), jnp.float32(jnp.inf))
        return jax.lax.while_loop(lambda c: (c[2] < steps) & (c[3] >= -1.0), body, init)[0]

    rows = {"fori_loop, jittered grid ψ⁰": warm_loop(x, lp, psi_jittered, steps),
            "fori_loop, initial_psi": warm_loop(x, lp, psi_f, steps),
            "while_loop + residual, initial_psi": warm_while}
    fs = {k: jax.jit(lambda b, one=one: jax.lax.map(one, b)) for k, one in rows.items()}
    as_arguments = jax.jit(lambda b, xx, ll: jax.lax.map(lambda beta: warm_while(beta, xx, ll), b))
    fs["the same, x and log π jit arguments (not constants)"] = lambda b: as_arguments(b, x, lp)
    program = exact_steps(x, betas, grid, steps)
    fs["solve's program (engine.solve.run), initial_psi"] = lambda b: program(psi_f)["psi"]
    return fs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["split", "c_forms", "loop"], default="split")
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
    elif args.part == "c_forms":
        loops, forms = {}, c_form_rows(x, lp)
    else:
        loops, forms = {}, {}
    for name, ev in forms.items():
        loops[name] = lambda beta, ev=ev: jax.lax.fori_loop(0, steps, lambda i, p: 0.9 * ev(p, beta) + 0.1 * p, psi0)
    fs = {k: jax.jit(lambda b, one=one: jax.lax.map(one, b)) for k, one in loops.items()}
    if args.part == "loop":
        fs = loop_rows(x, lp, psi0, np.asarray(betas), steps)
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
