"""Benchmark: memory of the programs that use a step map's Jacobian, dense map against blocked map.

    python benchmarks/jacobian_memory.py [--n 10000] [--d 64] [--side 12] [--time]

For each program, compiled for n points in d dimensions and a side × side grid (float64), XLA's
own account of its temporary memory (``compiled.memory_analysis().temp_size_in_bytes``; the
arguments, x and ψ, come on top):

* ``accelerated``: one β solved by ``Accelerated`` (Newton steps by GMRES on products J·v,
  the Lanczos certificate);
* ``u''``: u, u′, u″ at a fixed point (the implicit derivative's solve);
* ``rho``: 48 Lanczos steps at a point;
* ``newton``: the refinement's ``Newton`` iteration (8 steps) with ρ at the end.

With ``--time``: also the time of one evaluation and of one product J·v by each map's operator
(best of 5, after compilation; a product is the difference between 11 and 1 products from one
operator, over 10, so that making the operator, an evaluation, is not counted). The data are
random points (the memory does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import vaefp_jax as vf  # noqa: E402
from vaefp_jax import operators  # noqa: E402


def programs(x, grid, step_map, beta):
    lp, psi = jnp.asarray(grid.log_prior), jnp.asarray(x[: grid.num_tiles])
    u = lambda b: vf.phase.order_parameter_at_fixed_point(b, x, lp, psi, step_map=step_map)
    return {
        "accelerated": (jax.jit(lambda xx: vf.solve(xx, [beta], grid, iteration=vf.Accelerated(), step_map=step_map,
                                                    throw=False).psi), (x,)),
        "u''": (jax.jit(lambda b: jax.jvp(lambda c: jax.jvp(u, (c,), (1.0,)), (b,), (1.0,))), (beta,)),
        "rho": (jax.jit(lambda p: operators.lanczos(step_map.jacobian(p, x, beta, lp), p, 48)[0]), (psi,)),
        "newton": (jax.jit(lambda p: vf.solve(x, [beta], grid, iteration=vf.Newton(), step_map=step_map, psi0=p,
                                              throw=False).psi), (psi,)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--side", type=int, default=12)
    ap.add_argument("--time", action="store_true")
    args = ap.parse_args()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(args.n, args.d)))
    grid = vf.LatentGrid.uniform(args.side)
    K = grid.num_tiles
    print(f"n = {args.n}, d = {args.d}, K = {K}: K n = {K * args.n:,} elements, K n d = {K * args.n * args.d:,} "
          f"({K * args.n * args.d * 8 / 2**30:.2f} GiB in float64)")
    print(f"{'program':12} {'map':8} {'temporaries':>12}")
    for name_map, step_map in (("dense", vf.DenseMap()), ("blocked", vf.BlockedMap())):
        for name, (fn, args_) in programs(x, grid, step_map, 1.0).items():
            compiled = fn.lower(*args_).compile()
            mem = compiled.memory_analysis()
            print(f"{name:12} {name_map:8} {mem.temp_size_in_bytes / 2**20:10.1f} MB", flush=True)
    if args.time:
        lp, psi = jnp.asarray(grid.log_prior), jnp.asarray(x[:K])
        for name_map, step_map in (("dense", vf.DenseMap()), ("blocked", vf.BlockedMap())):
            ev = jax.jit(lambda p, m=step_map: m.evaluate(p, x, 1.0, lp).psi)

            def products(p, v, count, m=step_map):
                op = m.jacobian(p, x, 1.0, lp)
                return jax.lax.fori_loop(0, count, lambda i, u: op.mv(u) / jnp.linalg.norm(u), v)

            mv = jax.jit(products, static_argnums=2)

            def best(f, *a):
                f(*a).block_until_ready()
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    f(*a).block_until_ready()
                    times.append(time.perf_counter() - t)
                return min(times)

            per = (best(mv, psi, psi, 11) - best(mv, psi, psi, 1)) / 10
            print(f"{name_map:8} evaluation {best(ev, psi) * 1e3:8.1f} ms, product J v {per * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
