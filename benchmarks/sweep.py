"""Benchmark: one β sweep of the paper's Figure 3 setting, several ways, same run.

    python benchmarks/sweep.py [--num-betas 64] [--k 32] [--n 120] [--repeats 3]
                               [--max-steps 400] [--methods abcdegh] [--skip-numpy]

(a) NumPy, a loop over β, each β iterated until its own tolerance;
(b) JAX, a loop over β calling a jitted single-β ``while_loop`` (the same map);
(c) ``vaefp_jax.solve`` as shipped (``schedule="pool"``: one jitted loop over
    ``default_batch_size`` slots, a slot refilled with the next β as soon as its β stops;
    the map and the slot count of ``resolve_defaults``: on CPU fewer slots when the
    (n, K) arrays leave the cache, and the blocked map for n ≥ 2048);
(d) ``vaefp_jax.solve(schedule="fused", batch_size=B)``: one vmapped ``while_loop`` over all β;
(e) peer: ``optimistix.fixed_point`` with ``optx.FixedPointIteration`` under
    ``jax.jit(jax.vmap(...))`` over β (optional: skipped, with a note, when
    optimistix is not installed; ``pip install optimistix`` or the ``bench`` extra);
(f) ``vaefp_jax.streaming.solve_streamed`` (blocked map, ``--tile-chunk`` ×
    ``--data-chunk``), scheduled over β like (c) (the pool); only when ``f`` is in ``--methods``;
(g) ``vaefp_jax.solve(schedule="compact")``: all running β advance together
    ``--chunk-steps`` steps at a time, converged β are dropped between chunks;
(h) ``vaefp_jax.solve(schedule="fused")``: ``lax.map`` over chunks of
    ``default_batch_size`` β, each a vmapped ``while_loop`` (the default before "pool").
(i) the peer (e) iterating the dense map in its data-first (n, K) layout
    (``step_data_first``, ``_step`` before 2026-12-01), which under a wide
    ``vmap`` is sometimes the faster one on CPU (docs/scale.md); only when ``i``
    is in ``--methods``.

Protocol: Appendix A (ψ ← 0.9 F(ψ) + 0.1 ψ, tol 1e-3, ≤ 400 steps), float32,
the same initial ψ for every method. Prints a markdown table of wall times (best
of ``--repeats``, compilation excluded), map evaluations, and ratios to (a) and (b).

Stopping rule of (e): optimistix stops when ``norm((y − y') / (atol + rtol·|y'|)) < 1``;
with ``norm=optx.two_norm``, ``rtol=0`` and ``atol=tol`` that is ‖ψ' − ψ‖_F < tol,
our rule, up to float rounding of the division by atol. The damping is in the map
(``fn = 0.9 F(ψ) + 0.1 ψ``, ``damp`` left at 0), so older optimistix without a
``damp`` field runs the same iteration. optimistix also stops (result
"nonfinite") on a non-finite iterate, as our loop does on a NaN residual. Its
``max_steps`` counts map evaluations, like ours. "map evaluations" of (a)-(c),
(f)-(h) are the steps the β needed (Σ steps); the lanes a schedule runs
masked or idle are not counted, so time / evaluation includes them. Map evaluations of (d) and (e)
are B × the slowest β's steps: a vmapped ``while_loop`` runs every lane until all
have stopped.

The problem grid of issue 7: ``--num-betas`` 64 / 256 / 1024, ``--k`` 32 / 128
(K = k²), ``--n`` 120 / 10000. The large settings need ``--skip-numpy`` and a
small ``--max-steps`` (e.g. 1–5), ``--repeats 1`` and ``--no-warmup`` to finish in
minutes on a 2-core CPU (n=10000, k=128, B=64, one step: ~2–5 s per map
evaluation dense, ~0.4–2 s streamed, so ``--methods cf`` takes minutes); rows whose
dense (B, n, K) intermediates would not fit in memory (estimate: 3 float32 arrays
of n × K per β iterated together) are skipped with a note, ``--methods`` picks
rows, and the (n, K) map is ``--tile-chunk``-blocked in (f).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import vaefp_jax as vf
from vaefp_jax.fixed_point import _step, squared_distances
from vaefp_jax.solver import DENSE_COPIES, iterate, resolve_defaults
from vaefp_jax.streaming import solve_streamed

try:
    import optimistix as optx
except ImportError:  # optional peer
    optx = None



def numpy_step(psi, x, beta, lp):
    sq = np.zeros((x.shape[0], psi.shape[0]), x.dtype)
    for k in range(x.shape[1]):
        diff = x[:, k][:, None] - psi[:, k][None, :]
        sq += diff * diff
    a = -sq / (2 * beta)
    s = a + lp
    r = s.max(axis=1, keepdims=True)
    log_c = r + np.log(np.exp(s - r).sum(axis=1, keepdims=True))
    log_m = a - log_c
    w = np.exp(log_m - log_m.max(axis=0, keepdims=True))
    return (w.T @ x) / w.sum(axis=0)[:, None]


def numpy_sweep(x, betas, lp, psi0, damping, tol, max_steps):
    out, steps = [], []
    for beta in betas:
        psi = psi0.copy()
        for t in range(1, max_steps + 1):
            new = (1 - damping) * numpy_step(psi, x, beta, lp) + damping * psi
            res = np.sqrt(((new - psi) ** 2).sum())
            psi = new
            if res < tol:
                break
        out.append(psi)
        steps.append(t)
    return np.stack(out), np.array(steps)


def make_jax_single(x, lp, damping, tol, max_steps):
    @jax.jit
    def one(beta, psi0):
        return iterate(lambda p: _step(p, x, beta, lp), psi0, damping, tol, max_steps, 0)[:2]

    def sweep(betas, psi0):
        res = [one(b, psi0) for b in betas]
        return jnp.stack([r[0] for r in res]), jnp.stack([r[1] for r in res])

    return sweep


def step_data_first(psi, x, beta, log_prior):
    """F(ψ) (K, d) from log m in the data-first (n, K) layout: ``_step`` before
    2026-12-01, when it became tiles-first. Under a wide ``vmap`` over β (the
    peer's loop, and ``schedule="fused"`` with all β) this layout can be the
    faster one, so (i) gives the peer its choice."""
    logits = -squared_distances(x, psi) / (2 * beta)                               # (n, K)
    log_c = jax.nn.logsumexp(logits + log_prior[None, :], axis=1, keepdims=True)   # (n, 1)
    return jax.nn.softmax(logits - log_c, axis=0).T @ x


def make_optimistix(x, lp, damping, tol, max_steps, step=_step):
    """(e), (i): optimistix fixed-point iteration of the damped map ``step``, jit(vmap) over β.

    Returns ``sweep(betas, psi0) -> (psi (B, K, d), steps (B,))``."""
    solver = optx.FixedPointIteration(rtol=0.0, atol=tol, norm=optx.two_norm)

    def damped(psi, beta):
        return (1 - damping) * step(psi, x, beta, lp) + damping * psi

    def one(beta, psi0):
        sol = optx.fixed_point(damped, solver, psi0, beta, max_steps=max_steps, throw=False)
        return sol.value, sol.stats["num_steps"]

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def memory_limit() -> int:
    """Bytes of memory of the default device (host RAM on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def dense_bytes(n: int, K: int, lanes: int) -> int:
    """Estimated bytes of the dense map's (n, K) float32 intermediates, ``lanes`` β at once."""
    return DENSE_COPIES * lanes * n * K * 4


def best_time(fn, repeats, warmup=False):
    """Best wall time of ``repeats`` calls (after one untimed call if ``warmup``)."""
    if warmup:
        jax.block_until_ready(fn())  # compile (and run once)
    best, out = np.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-betas", type=int, default=64, help="B; issue 7: 64, 256, 1024")
    ap.add_argument("--k", type=int, default=32, help="k x k tile grid; issue 7: 32, 128")
    ap.add_argument("--n", type=int, default=120, help="data points; issue 7: 120, 10000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=400, help="step cap (Appendix A: 400)")
    ap.add_argument("--methods", default="abcdegh", help="rows to run, letters of a-i (default abcdegh)")
    ap.add_argument("--chunk-steps", type=int, default=25, help="(g): steps between compactions")
    ap.add_argument("--skip-numpy", action="store_true", help="same as leaving 'a' out of --methods")
    ap.add_argument("--tile-chunk", type=int, default=1024, help="(f): tiles per block")
    ap.add_argument("--data-chunk", type=int, default=1024, help="(f): data points per block")
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first call of (c)-(f), compilation (~1 s) included, instead of running "
                         "each once untimed first: for the large settings, where a run takes minutes")
    args = ap.parse_args(argv)
    methods = set(args.methods) - ({"a"} if args.skip_numpy else set())
    if not methods <= set("abcdefghi"):
        ap.error(f"--methods takes letters of abcdefghi, got {args.methods!r}")

    x64 = vf.datasets.three_clusters(args.n)
    grid = vf.LatentGrid.uniform(args.k)
    B, K, max_steps = args.num_betas, grid.num_tiles, args.max_steps
    betas = np.geomspace(1e-4, 1.0, B).astype(np.float32)
    proto = vf.Protocol.paper()
    x = jnp.asarray(x64, jnp.float32)
    lp = jnp.asarray(grid.log_prior, jnp.float32)
    psi0 = vf.initial_psi(x, grid, proto.init_noise)
    dev = jax.devices()[0]
    limit = memory_limit()
    print(f"# {time.strftime('%Y-%m-%d')}  device: {dev.device_kind} ({jax.default_backend()}), "
          f"CPU: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}"
          f"{'; optimistix ' + optx.__version__ if optx is not None and hasattr(optx, '__version__') else ''}")
    print(f"# problem: n={args.n} three-cluster points, {args.k}x{args.k} grid (K={K}), "
          f"B={B} beta in [1e-4, 1], paper protocol (max_steps={max_steps}), float32")
    warm = not args.no_warmup
    if not warm:
        print("# --no-warmup: times of (c)-(f) include their compilation")

    def fits(label, lanes):
        need = dense_bytes(args.n, K, lanes)
        if need <= 0.8 * limit:
            return True
        print(f"# {label}: skipped, its dense intermediates (~{need / 1e9:.1f} GB for {lanes} beta at once) "
              f"exceed 80% of the {limit / 1e9:.1f} GB memory; use (f) or fewer beta")
        return False

    rows, ref = [], {}  # ref: psi and steps of (c), the agreement reference for (d)-(f)

    def agreement(label, psi, steps):
        if "c" in ref:
            err = np.abs(np.asarray(psi) - ref["c"][0]).max(axis=(1, 2))
            same = int(np.sum(np.asarray(steps) == ref["c"][1]))
            print(f"# {label}: max |psi - psi_(c)| per beta: median {np.median(err):.1e}, "
                  f"max {err.max():.1e}; same step count as (c) for {same}/{B} beta")

    if "a" in methods:
        t, (psi_np, steps_np) = best_time(
            lambda: numpy_sweep(np.asarray(x), betas, np.asarray(lp), np.asarray(psi0), 0.1, 1e-3, max_steps),
            max(1, args.repeats - 2))
        rows.append(("(a) NumPy loop over beta", t, int(steps_np.sum())))
    if "b" in methods and fits("(b) JAX jitted loop over beta", 1):
        single = make_jax_single(x, lp, jnp.float32(0.1), jnp.float32(1e-3), max_steps)
        single(betas[:1], psi0)  # compile
        t, (psi_b, steps_b) = best_time(lambda: single(betas, psi0), args.repeats)
        rows.append(("(b) JAX jitted loop over beta", t, int(np.sum(steps_b))))
    auto_map, auto_lanes = resolve_defaults(None, None, B, args.n, K, x.shape[1], 4)
    auto_name = ("dense map" if auto_map is _step
                 else f"{type(auto_map).__name__} {auto_map.tile_chunk}x{auto_map.data_chunk}")
    for letter, label, bs, sched in [
            ("c", f"(c) vaefp_jax.solve (default: {auto_name}, pool of {auto_lanes} slots)", None, "auto"),
            ("d", "(d) one vmapped while_loop", B, "fused"),
            ("h", f"(h) solve(schedule='fused'), chunks of {auto_lanes}", None, "fused")]:
        lanes = bs or auto_lanes
        if letter not in methods or (auto_map is _step and not fits(label, lanes)):
            continue
        call = lambda bs=bs, sched=sched: vf.solve(x, betas, grid, psi0=psi0, protocol=proto, max_steps=max_steps,
                                                   batch_size=bs, schedule=sched, warn=False)
        t, r = best_time(call, args.repeats, warm)
        rows.append((label, t, int(np.sum(r.steps)) if bs is None else int(B * np.max(r.steps))))
        if letter == "c":
            ref["c"] = (np.asarray(r.psi), np.asarray(r.steps))
        else:
            agreement(label, r.psi, r.steps)
        if "a" in methods:
            # float32 rounding differs between NumPy and XLA; near a transition
            # (contraction → 1) the tol-1e-3 stopping point amplifies it.
            err = np.abs(np.asarray(r.psi) - psi_np).max(axis=(1, 2))
            same = int(np.sum(np.asarray(r.steps) == steps_np))
            print(f"# {label}: max |psi - psi_numpy| per beta: median {np.median(err):.1e}, "
                  f"max {err.max():.1e}; same step count for {same}/{len(betas)} beta")
    for letter, label, step in (("e", "(e) optimistix FixedPointIteration, jit(vmap)", _step),
                                ("i", "(i) optimistix as (e), data-first dense map", step_data_first)):
        if letter in methods and optx is None:
            print(f"# ({letter}) skipped: optimistix is not installed (pip install optimistix, or the 'bench' extra)")
        elif letter in methods and fits(label, B):
            peer = make_optimistix(x, lp, jnp.float32(0.1), 1e-3, max_steps, step)
            t, (psi_e, steps_e) = best_time(lambda: peer(betas, psi0), args.repeats, warm)
            rows.append((label, t, int(B * np.max(steps_e))))
            agreement(label, psi_e, steps_e)
    if "g" in methods:
        label = f"(g) vaefp_jax.solve(schedule='compact', chunk_steps={args.chunk_steps})"
        call = lambda: vf.solve(x, betas, grid, psi0=psi0, protocol=proto, max_steps=max_steps,
                                schedule="compact", chunk_steps=args.chunk_steps, warn=False)
        t, r = best_time(call, args.repeats, warm)
        rows.append((label, t, int(np.sum(r.steps))))
        agreement(label, r.psi, r.steps)
    if "f" in methods:
        label = f"(f) solve_streamed, {args.tile_chunk}x{args.data_chunk} blocks"
        call = lambda: solve_streamed(x, betas, grid, psi0=psi0, protocol=proto, max_steps=max_steps,
                                      tile_chunk=args.tile_chunk, data_chunk=args.data_chunk, warn=False)
        t, r = best_time(call, args.repeats, warm)
        rows.append((label, t, int(np.sum(r.steps))))
        agreement(label, r.psi, r.steps)

    base_a = next((t for name, t, _ in rows if name.startswith("(a)")), None)
    base_b = next((t for name, t, _ in rows if name.startswith("(b)")), None)
    base_e = next((t for name, t, _ in rows if name.startswith("(e)")), None)
    print("| method | wall time (s) | map evaluations | time / evaluation (us) | vs (a) NumPy | vs (b) JAX loop "
          "| vs (e) optimistix |")
    print("|---|---|---|---|---|---|---|")
    for name, t, evals in rows:
        ra = f"{base_a / t:.1f}x" if base_a else "-"
        rb = f"{base_b / t:.2f}x" if base_b else "-"
        re_ = f"{base_e / t:.2f}x" if base_e else "-"
        print(f"| {name} | {t:.3f} | {evals} | {t / evals * 1e6:.0f} | {ra} | {rb} | {re_} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
