"""Benchmark: exponentials per (tile, point) pair of each step map, counted in the traced
program, and what Pallas's interpret mode says about a streaming kernel (issue 16, item 1).

    python benchmarks/pallas_exps.py [--n 120] [--k 32] [--repeats 5] [--steps 100]

A streaming kernel (``PallasMap``, ``BlockedMap``) never stores the (K, n) array E, so the
one-exponential identity (docs/one_exponential.md) saves it an exponential only if a data
block's whole row of E stays on chip between c̃_i = Σ_b g_b E_bi and the column sums. This
script measures, without a GPU, what can be measured:

1. **Counts.** Each map's ``evaluate`` at Figure 3's size is traced (``jax.make_jaxpr``) and
   its ``exp`` and ``log`` equations are counted, each times the number of elements it
   produces, times the grid of an enclosing ``pallas_call`` and the length of an enclosing
   ``scan`` (``fori_loop`` with static bounds): exponentials per pair of the program that
   runs, including padding. (A ``while_loop``'s body would be counted once: it is flagged.)
2. **Interpret-mode time.** ``PallasMap`` in interpret mode (the only way Pallas runs on
   CPU: the kernel body as XLA operations, one grid step after another) against the dense
   map's XLA program: ``--steps`` evaluations ψ ← F(ψ) in one jitted ``fori_loop``, best of
   ``--repeats``, compilation excluded, per evaluation.

Neither says how a compiled GPU kernel splits its time between exponentials (the special
function units) and multiply-adds: that is owed on a GPU (docs/one_exponential.md).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

import vaefp_jax as vf
from vaefp_jax.maps.pallas import _NEG, _compiler_params, _pad, _squared_distances_block

sys.path.insert(0, os.path.dirname(__file__))
from sweep import best_time, cpu_description  # noqa: E402

COUNTED = ("exp", "exp2", "log")


def count(jaxpr, scale: float = 1.0, out: dict | None = None) -> dict:
    """Elements produced by the equations of ``COUNTED`` in ``jaxpr`` and every sub-jaxpr,
    scaled by enclosing ``pallas_call`` grids and ``scan`` lengths; ``out["while"]`` counts
    while-loop bodies met (their trip count is not static)."""
    out = {name: 0.0 for name in (*COUNTED, "while")} if out is None else out
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in COUNTED:
            out[name] += scale * sum(math.prod(v.aval.shape) for v in eqn.outvars)
        inner = scale
        if name == "pallas_call":
            inner *= math.prod(eqn.params["grid_mapping"].grid)
        elif name == "scan":
            inner *= eqn.params["length"]
        elif name == "while":
            out["while"] += 1
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (tuple, list)) else (value,)):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    count(sub, inner, out)
    return out


def _one_pass_kernel(x_ref, psi_ref, g_ref, s_ref, a_ref, two_beta_ref, c_ref, part_ref, *, d):
    """A prototype, not a shipped map: the one pass of ``equations.evaluate_shifted`` as one
    Pallas kernel over blocks of data points, each block's whole row of E (nb, Kp) held as a
    value (on a GPU: registers and shared memory) between c̃ and the column sums, so one
    exponential per pair. x_ref (d, nb), psi_ref (d, Kp), g_ref (Kp,) = π e^s, s_ref (Kp,),
    a_ref (nb,), two_beta_ref (1,) → c_ref (nb,), part_ref (1, d + 1, Kp): this block's
    Σ_i E_bi [x_i, 1] / c̃_i, summed over blocks outside."""
    scale = -1 / two_beta_ref[0]
    rows = [x_ref[k, :] for k in range(d)]
    sq = _squared_distances_block(rows, [psi_ref[k, :] for k in range(d)])          # (nb, Kp)
    E = jnp.exp(sq * scale - a_ref[...][:, None] - s_ref[...][None, :])
    c = jnp.sum(E * g_ref[...][None, :], axis=1)
    c_ref[...] = c
    w = E / jnp.where(c > 0, c, 1)[:, None]                                        # padded rows: E = 0
    for k in range(d):
        part_ref[0, k, :] = jnp.sum(w * rows[k][:, None], axis=0)
    part_ref[0, d, :] = jnp.sum(w, axis=0)


def one_pass_pallas(psi, x, beta, log_prior, row_shift, column_shift, data_block=32, interpret=True, num_warps=4):
    """(F (K, d), c̃ (n,), T (K,)) of ``equations.shifted_sums`` from :func:`_one_pass_kernel`
    (Pallas's interpreter, or its Triton backend where ``interpret`` is false)."""
    (K, d), (n, _) = psi.shape, x.shape
    dtype = x.dtype
    nb = min(data_block, pl.next_power_of_2(n))
    n_pad, K_pad = pl.cdiv(n, nb) * nb, pl.next_power_of_2(K)
    xt = _pad(x.T, 1, n_pad, 0)
    pt = _pad(psi.T, 1, K_pad, 0)
    s = _pad(column_shift.astype(dtype), 0, K_pad, -_NEG)           # padded tiles: E = 0
    g = _pad(jnp.exp(log_prior + column_shift).astype(dtype), 0, K_pad, 0)
    a = _pad(row_shift.astype(dtype), 0, n_pad, -_NEG)              # padded points: E = 0
    full = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))
    c, part = pl.pallas_call(
        functools.partial(_one_pass_kernel, d=d),
        out_shape=(jax.ShapeDtypeStruct((n_pad,), dtype), jax.ShapeDtypeStruct((n_pad // nb, d + 1, K_pad), dtype)),
        grid=(n_pad // nb,),
        in_specs=[pl.BlockSpec((d, nb), lambda i: (0, i)), full((d, K_pad)), full((K_pad,)), full((K_pad,)),
                  pl.BlockSpec((nb,), lambda i: (i,)), full((1,))],
        out_specs=(pl.BlockSpec((nb,), lambda i: (i,)), pl.BlockSpec((1, d + 1, K_pad), lambda i: (i, 0, 0))),
        interpret=interpret,
        **({} if interpret else dict(compiler_params=_compiler_params(num_warps))),
    )(xt, pt, g, s, a, jnp.reshape(2 * beta, (1,)).astype(dtype))
    sums = jnp.sum(part, axis=0)                                     # (d + 1, Kp)
    return (sums[:d] / sums[d]).T[:K], c[:n], sums[d, :K]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="evaluations ψ ← F(ψ) per timed loop")
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d')}  {cpu_description()}; jax {jax.__version__}")
    x = jnp.asarray(vf.datasets.three_clusters(args.n), jnp.float32)
    grid = vf.LatentGrid.uniform(args.k)
    psi = jnp.asarray(grid.z, jnp.float32) + 0.01
    lp = jnp.asarray(grid.log_prior, jnp.float32)
    beta = jnp.float32(0.01)
    n, K = args.n, grid.num_tiles
    maps = {"DenseMap(kernel='xla').evaluate (maxima as shifts)": vf.DenseMap(kernel="xla"),
            "DenseMap(form='log_space')": vf.DenseMap(form="log_space"),
            "BlockedMap()": vf.BlockedMap(),
            "PallasMap() (interpret)": vf.PallasMap(interpret=True)}
    print(f"# n={n}, K={K}, d=2, float32, beta={float(beta)}; counts per (tile, point) pair, padding included")
    print("| map | exp / pair | log / pair | while bodies | interpret-mode or XLA time (µs) |")
    print("|---|---|---|---|---|")
    ref = np.asarray(vf.equations.evaluate(psi, x, beta, lp).psi)
    programs = {label: (lambda p, m=step_map: m.evaluate(p, x, beta, lp)) for label, step_map in maps.items()}
    # the prototype, with the shifts of a nearby ψ (as inside an iteration: the previous step's)
    prev = vf.equations.evaluate(psi - 0.01, x, beta, lp)
    programs["prototype: one Pallas pass, E row on chip, given shifts (interpret)"] = (
        lambda p: vf.equations.MapValue(*one_pass_pallas(p, x, beta, lp, prev.log_c, prev.log_mass)))
    programs["equations.evaluate_shifted (XLA, the same shifts)"] = (
        lambda p: vf.equations.evaluate_shifted(p, x, beta, lp, prev.log_c, prev.log_mass)[0])
    for label, program in programs.items():
        loop = jax.jit(lambda p, program=program: jax.lax.fori_loop(0, args.steps, lambda _, q: program(q).psi, p))
        c = count(jax.make_jaxpr(program)(psi).jaxpr)
        t, _ = best_time(lambda: loop(psi), args.repeats, warmup=True)
        t /= args.steps
        err = float(np.max(np.abs(np.asarray(jax.jit(program)(psi).psi) - ref)))
        print(f"| {label} | {(c['exp'] + c['exp2']) / (n * K):.3f} | {c['log'] / (n * K):.4f} | {int(c['while'])} "
              f"| {t * 1e6:.0f} (max |ψ − equations.evaluate| {err:.1e}) |")
    # the prototype lowers to a Triton kernel for a GPU without one (compiling it to PTX and
    # timing it need the GPU)
    f = jax.jit(lambda p: one_pass_pallas(p, x, beta, lp, prev.log_c, prev.log_mass, interpret=False)[0])
    text = f.trace(psi).lower(lowering_platforms=("cuda",)).as_text()
    print(f"# prototype lowered for cuda (no GPU needed): Triton calls: "
          f"{sum('xla.gpu.triton' in line for line in text.splitlines())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
