"""Benchmark: how far is the solver from what the hardware allows? (issue 7, "the limit")

    python benchmarks/floor.py [--num-betas 64] [--k 32] [--n 120] [--steps 400] [--repeats 3]
    python benchmarks/floor.py --num-betas 1024        # the GPU target setting

1. Measures, on the default JAX device, with XLA itself, before and again after the rows
   (the floor takes the higher of the two measurements of each rate):
   * the exp throughput: ``y ← exp(−y)`` over a float32 array, repeated in a
     ``fori_loop`` (CPU: a cache-resident array, one exp per pass; GPU: a large
     array, 16 exps per element and pass), in exps/s;
   * the multiply-add throughput: the same with ``y ← a·y + b`` (8 / 64 per pass), in FMA/s;
   * the memory bandwidth: ``y = 2x + 1`` over an array far larger than the
     caches, bytes read + written per second.
2. Counts the work of one map evaluation F(ψ) (eq. 14–15) for one β, n points,
   K tiles, d coordinates, as the fused Pallas kernels (``vaefp_jax.PallasMap``) do it:
   * exps: 2 n K in the log-space form (row log-sum-exp, column softmax), plus n
     logs; n K + K in the one-exponential form (``vaefp_jax.equations.evaluate``:
     E_bi = exp(ℓ_bi − M_i − r_b) serves both sums), plus n + K logs. Both floors
     are printed, and every row as a multiple of each;
   * multiply-adds: 2 passes × 2 d n K for the distances (difference, square and
     sum: ~2 per coordinate) + d n K for the weighted sums + ~4 n K for
     scaling, shifts and sums: (5 d + 4) n K;
   * bytes: x (n, d), ψ (K, d), log π (K,) read, ψ (K, d) written: 4 (n d + 2 K d + K).
   The floor of one evaluation is max(exps / exp rate, FMAs / FMA rate, bytes / bandwidth):
   the exps and the arithmetic share the same units on a CPU, so on CPU the floor
   is the sum of the first two (still a lower bound: the reductions' own latency
   and the vector lane shuffles are not counted).
3. Times the benchmark problem of issue 7: ``--num-betas`` β (log-spaced in
   [1e-4, 1]), n three-cluster points, k × k tiles, exactly ``--steps`` steps per
   β (nothing stops early), float32, damping 0.1, with the loops of
   (c) ``vaefp_jax.solve`` (default step map, schedule and batch size: ``Pool()``),
   (d) ``solve(schedule=Vmapped(batch_size=B))``: all β in one vmapped loop,
   (k) ``solve(step_map=PallasMap(), schedule=Vmapped(batch_size=B))``: the Pallas
       kernels, all β in one vmapped loop (GPU only: on CPU Pallas only interprets),
   (l) the loop of (d) with the dense map in its data-first (n, K) layout, as
       the dense map was before 2026-12-01 (the tiles-first layout was chosen on CPU;
       this row says whether it is also the better one on a GPU),
   (m) (c) with ``DenseMap(form="log_space")``: the two-exponential map in the same
       engine (what the one-exponential form gains, alone),
   (n) (c) with ``DenseMap(reuse_shifts=False)``: the one-exponential map taking its
       shifts from two maxima every step (three passes over the pairs) instead of from
       the previous evaluation's normalisers (one pass; what reusing them gains, alone),
   (o) (c) with ``DenseMap(kernel="xla")``: the one pass as XLA's two products, which
       each read E, instead of the C++ kernel of ``vaefp_jax.native`` (E computed and read
       once; what the kernel gains, alone; on CPU (c) uses the kernel where it is built),
   and reports each as a multiple of B × steps × the floor of one evaluation.
   Each row is ``solve``'s jitted program alone: the inputs are validated and
   placed once (``vaefp_jax.engine.solve.prepare``), and the timed call is
   ``engine.solve.run``, with a damped iteration whose tolerance is −1 (public
   ``Damped`` refuses it), so that every β runs exactly ``--steps`` steps.

The issue's GPU target: 1024 β × 32 × 32 tiles × n = 120 × 400 steps in ≤ 0.5 s
and within 5× of the floor. On CPU, run with the default 64 β.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import vaefp_jax as vf
from vaefp_jax.engine import solve as engine
from vaefp_jax.engine.schedules import default_batch_size
from vaefp_jax.maps import default_step_map

sys.path.insert(0, os.path.dirname(__file__))
from sweep import DataFirstMap, best_time, cpu_name  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ExactSteps(vf.Damped):
    """``Damped`` with tolerance −1: the residual is never below it, so every β runs
    exactly ``max_steps`` steps (a public solve with tol > 0 would stop a β whose
    float32 iterate stops changing)."""

    def __post_init__(self):
        object.__setattr__(self, "tol", -1.0)


def exact_steps(x, betas, grid, steps: int, step_map=None, schedule=None):
    """``solve``'s jitted program alone (inputs validated and placed once by
    ``engine.solve.prepare``) with every β run for exactly ``steps`` damped steps (α = 0.9):
    a callable ψ⁰ ((K, d) shared or (B, K, d)) → the raw outputs of ``engine.solve.run``."""
    setup = engine.prepare(x, betas, grid, iteration=ExactSteps(damping=0.1, max_steps=steps),
                           step_map=step_map, schedule=schedule)
    key = jax.random.PRNGKey(0)
    return lambda psi0: engine.run(setup, psi0, key)


def _throughput(op, size: int, chain: int, total: int, repeats: int) -> float:
    """Applications of ``op`` per second: ``op`` chained ``chain`` times in one
    fused loop over ``size`` float32, that loop repeated (``fori_loop``) until
    ``total`` applications. On CPU keep ``size`` cache-resident and ``chain``
    short (XLA:CPU vectorises a long elementwise chain poorly); on GPU use a
    large array (parallelism) and a long chain (one load/store per ``chain`` ops)."""
    passes = max(1, total // (size * chain))

    def one_pass(_, y):
        for _ in range(chain):
            y = op(y)
        return y

    f = jax.jit(lambda y: jax.lax.fori_loop(0, passes, one_pass, y))
    y = jnp.linspace(0.0, 1.0, size, dtype=jnp.float32)
    t, _ = best_time(lambda: f(y), repeats, warmup=True)
    return passes * chain * size / t


def exp_rate(backend: str, repeats: int) -> float:
    """Exps per second (``y ← exp(−y)`` stays in (0.3, 1]: no denormals, no overflow)."""
    size, chain = ((1 << 16), 1) if backend == "cpu" else ((1 << 24), 16)
    return _throughput(lambda y: jnp.exp(-y), size, chain, 1 << 28, repeats)


def fma_rate(backend: str, repeats: int) -> float:
    """Multiply-adds per second (``y ← 0.999 y + 0.001``)."""
    size, chain = ((1 << 16), 8) if backend == "cpu" else ((1 << 24), 64)
    return _throughput(lambda y: y * jnp.float32(0.999) + jnp.float32(0.001), size, chain, 1 << 30, repeats)


def bandwidth(size: int, repeats: int) -> float:
    """Bytes per second of ``2x + 1`` over ``size`` float32 (read + write)."""
    f = jax.jit(lambda v: 2 * v + 1)
    v = jnp.ones((size,), jnp.float32)
    t, _ = best_time(lambda: f(v), repeats, warmup=True)
    return 8 * size / t


def measure_rates(backend: str, big: int, repeats: int) -> dict:
    """The exp and multiply-add throughputs and the bandwidth (over ``big`` float32) of this device."""
    return dict(exp=exp_rate(backend, repeats), fma=fma_rate(backend, repeats), bandwidth=bandwidth(big, repeats))


def work(n: int, K: int, d: int, exps_per_pair: int = 2) -> dict:
    """Exps (and logs), multiply-adds and bytes of one map evaluation for one β (float32),
    with ``exps_per_pair`` = 2 (log-space form) or 1 (one-exponential form)."""
    exps = 2 * n * K + n if exps_per_pair == 2 else n * K + K + n + K
    return dict(exps=exps, fmas=(5 * d + 4) * n * K, bytes=4 * (n * d + 2 * K * d + K))


def floor_seconds(w: dict, rates: dict, backend: str) -> float:
    t_exp = w["exps"] / rates["exp"]
    t_fma = w["fmas"] / rates["fma"]
    t_mem = w["bytes"] / rates["bandwidth"]
    compute = t_exp + t_fma if backend == "cpu" else max(t_exp, t_fma)
    return max(compute, t_mem)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-betas", type=int, default=64)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="cdklmno", help="rows to run, letters of c, d, k, l, m, n, o")
    ap.add_argument("--data-block", type=int, default=64, help="(k): PallasMap data_block")
    ap.add_argument("--tile-block", type=int, default=128, help="(k): PallasMap tile_block")
    ap.add_argument("--num-warps", type=int, default=4, help="(k): PallasMap num_warps (Triton)")
    args = ap.parse_args(argv)
    backend = jax.default_backend()
    big = 1 << (26 if backend != "cpu" else 24)   # 256 MB / 64 MB: beyond the caches
    rates = measure_rates(backend, big, args.repeats)
    dev = jax.devices()[0]
    print(f"# {time.strftime('%Y-%m-%d')}  device: {dev.device_kind} ({backend}), CPU: {cpu_name()}, "
          f"{os.cpu_count()} cores; jax {jax.__version__}")
    print(f"# {vf.native.status()}")
    print(f"# measured: exp {rates['exp'] / 1e9:.2f} G/s, multiply-add {rates['fma'] / 1e9:.2f} G/s, "
          f"memory {rates['bandwidth'] / 1e9:.1f} GB/s (float32)")

    x = jnp.asarray(vf.datasets.three_clusters(args.n), jnp.float32)
    grid = vf.LatentGrid.uniform(args.k)
    n, K, d, B, S = args.n, grid.num_tiles, x.shape[1], args.num_betas, args.steps
    print(f"# problem: n={n}, {args.k}x{args.k} tiles (K={K}), d={d}, B={B} beta, {S} steps each "
          "(none stops early), float32")
    betas = np.geomspace(1e-4, 1.0, B).astype(np.float32)
    psi0 = vf.initial_psi(x, grid)
    auto_map = default_step_map(n, K, d)
    width = min(B, default_batch_size(B, *auto_map.lane_shape(n, K), 4))
    pallas = vf.PallasMap(data_block=args.data_block, tile_block=args.tile_block, num_warps=args.num_warps)
    all_b = vf.Vmapped(batch_size=B)
    specs = [("c", f"(c) solve's default loop ({auto_map!r}, pool of {width} slots)", None, None),
             ("d", "(d) solve(schedule=Vmapped(batch_size=B)): one vmapped loop", None, all_b),
             ("k", f"(k) the same with step_map={pallas} (Pallas kernels)", pallas, all_b),
             ("l", "(l) the loop of (d) with the data-first (n, K) dense map", DataFirstMap(), all_b),
             ("m", "(m) (c) with DenseMap(form='log_space'): two exponentials per pair",
              vf.DenseMap(form="log_space"), None),
             ("n", "(n) (c) with DenseMap(reuse_shifts=False): the maxima as shifts, every step",
              vf.DenseMap(reuse_shifts=False), None),
             ("o", "(o) (c) with DenseMap(kernel='xla'): the one pass as XLA's two products (E read twice)",
              vf.DenseMap(kernel="xla"), None)]
    rows, ref = [], None
    for letter, label, step_map, schedule in specs:
        if letter not in args.methods:
            continue
        if letter == "k" and backend == "cpu":
            print("# (k) skipped: Pallas kernels only interpret on CPU (run this on a GPU)")
            continue
        program = exact_steps(x, betas, grid, S, step_map=step_map, schedule=schedule)
        call = lambda program=program: program(psi0)
        t, out = best_time(call, args.repeats, warmup=True)
        psi, steps = out["psi"], out["steps"]
        assert int(np.min(steps)) == S == int(np.max(steps)), "every beta should run exactly --steps steps"
        if ref is None:
            ref = np.asarray(psi)
        else:
            err = float(np.nanmax(np.abs(np.asarray(psi) - ref)))
            print(f"# {label}: max |psi - psi of the first row| = {err:.1e}")
        rows.append((label, t))
    # the rates again after the rows: this machine's short throughput loops vary by up to a
    # third between runs, so the floor takes the higher of the two measurements of each rate
    # (the lower floor: the ratios below are the less flattering ones)
    again = measure_rates(backend, big, args.repeats)
    print(f"# measured after the rows: exp {again['exp'] / 1e9:.2f} G/s, multiply-add {again['fma'] / 1e9:.2f} G/s, "
          f"memory {again['bandwidth'] / 1e9:.1f} GB/s; the floor uses the higher of each")
    rates = {k: max(rates[k], again[k]) for k in rates}
    w = work(n, K, d)
    one = floor_seconds(w, rates, backend)
    total = B * S * one
    w1 = work(n, K, d, exps_per_pair=1)
    one1 = floor_seconds(w1, rates, backend)
    total1 = B * S * one1
    print(f"# one evaluation: {w['exps']:.3g} exps, {w['fmas']:.3g} multiply-adds, {w['bytes']:.3g} bytes "
          f"-> floor {one * 1e6:.2f} us ({'exp + FMA' if backend == 'cpu' else 'max of exp, FMA, memory'}); "
          f"sweep floor {total:.4f} s")
    print(f"# one evaluation, one-exponential form: {w1['exps']:.3g} exps and logs -> floor {one1 * 1e6:.2f} us; "
          f"sweep floor {total1:.4f} s")
    print("| method | wall time (s) | time / (beta x step) (us) | floor 2 exp (us) | x floor 2 exp "
          "| floor 1 exp (us) | x floor 1 exp |")
    print("|---|---|---|---|---|---|---|")
    for label, t in rows:
        print(f"| {label} | {t:.4f} | {t / (B * S) * 1e6:.2f} | {one * 1e6:.2f} | {t / total:.2f}x "
              f"| {one1 * 1e6:.2f} | {t / total1:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
