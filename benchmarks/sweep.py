"""Benchmark: one β sweep of the paper's Figure 3 setting, several ways, same run.

    python benchmarks/sweep.py [--num-betas 64] [--k 32] [--n 120] [--repeats 3]
                               [--max-steps 400] [--methods abcdehj] [--skip-numpy]

(a) NumPy, a loop over β, each β iterated until its own tolerance;
(b) JAX, a loop over β calling a jitted single-β ``while_loop`` (the plain map,
    see ``--peer-map``, and the same stopping rule as ``Damped``);
(c) ``vaefp_jax.solve`` as shipped (``Damped.paper()``, the default schedule
    ``Pool()``: one jitted loop over ``default_batch_size`` slots, a slot refilled
    with the next β as soon as its β stops; the map of ``default_step_map`` and the
    slot count of ``default_batch_size``: on CPU fewer slots when the (n, K) arrays
    leave the cache, and ``BlockedMap`` where the dense arrays would not fit in memory);
(d) ``solve(schedule=Vmapped(batch_size=B))``: one vmapped ``while_loop`` over all β;
(e) peer: ``optimistix.fixed_point`` with ``optx.FixedPointIteration`` under
    ``jax.jit(jax.vmap(...))`` over β (optional: skipped, with a note, when
    optimistix is not installed; ``pip install optimistix`` or the ``bench`` extra);
(f) ``solve(step_map=BlockedMap(--tile-chunk, --data-chunk))``, scheduled over β
    like (c) (the pool); only when ``f`` is in ``--methods``;
(h) ``solve(schedule=Vmapped())``: ``lax.map`` over chunks of
    ``default_batch_size`` β, each a vmapped ``while_loop`` (the default before the pool);
(i) the peer (e) iterating the dense map in its data-first (n, K) layout
    (``step_data_first``, the dense map before 2026-12-01), which under a wide
    ``vmap`` is sometimes the faster one on CPU (docs/scale.md); only when ``i``
    is in ``--methods``;
(j) the peer at its best on CPU: optimistix ``FixedPointIteration`` under
    ``jax.jit(jax.lax.map(...))`` over β, one β at a time, so each β stops at its
    own tolerance (no vmapped lane waits for the slowest).

(The 0.1 row (g), ``schedule="compact"``, is gone: the pool does the same in one jitted loop.)

Protocol: Appendix A (ψ ← 0.9 F(ψ) + 0.1 ψ, tol 1e-3, ≤ 400 steps), float32,
the same initial ψ for every method. Prints a markdown table of wall times (best
of ``--repeats``, compilation excluded), map evaluations, and ratios to (a), (b)
and the fastest peer row that ran ((a), (b), (e), (i) or (j)).

The peers (b), (e), (j) iterate ``--peer-map``: by default the log-space map
with two exponentials per (tile, point) pair (``DenseMap(form="log_space")``,
eq. 14–15 as a user would write them, and as this package did until 0.4);
``--peer-map one_exponential`` gives them this package's map too, which separates
what the map gains from what the schedule gains. (a) is the log-space form in NumPy.

Stopping rule of (e), (i), (j): optimistix stops when ``norm((y − y') / (atol + rtol·|y'|)) < 1``;
with ``norm=optx.two_norm``, ``rtol=0`` and ``atol=tol`` that is ‖ψ' − ψ‖_F < tol,
our rule, up to float rounding of the division by atol. The damping is in the map
(``fn = 0.9 F(ψ) + 0.1 ψ``, ``damp`` left at 0), so older optimistix without a
``damp`` field runs the same iteration. optimistix also stops (result
"nonfinite") on a non-finite iterate, as our loop does on a NaN residual. Its
``max_steps`` counts map evaluations, like ours. "map evaluations" of (a)-(c),
(f), (h) and (j) are the steps the β needed (Σ steps); the lanes a schedule runs
masked or idle are not counted, so time / evaluation includes them. Map evaluations of (d), (e)
and (i) are B × the slowest β's steps: a vmapped ``while_loop`` runs every lane until all
have stopped.

The problem grid of issue 7: ``--num-betas`` 64 / 256 / 1024, ``--k`` 32 / 128
(K = k²), ``--n`` 120 / 10000. The large settings need ``--skip-numpy`` and a
small ``--max-steps`` (e.g. 1–5), ``--repeats 1`` and ``--no-warmup`` to finish in
minutes on a 2-core CPU (n=10000, k=128, B=64, one step: ~2–5 s per map
evaluation dense, ~0.4–2 s blocked, so ``--methods cf`` takes minutes); rows whose
dense (B, n, K) intermediates would not fit in memory (estimate: 3 float32 arrays
of n × K per β iterated together) are skipped with a note, ``--methods`` picks
rows, and the (n, K) map is ``--tile-chunk``-blocked in (f).
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
from vaefp_jax.engine.schedules import default_batch_size, dense_bytes
from vaefp_jax.equations import MapValue, squared_distances
from vaefp_jax.maps import StepMap, default_step_map
from vaefp_jax.maps.auto import physical_memory
from vaefp_jax.runs import cpu_model

try:
    import optimistix as optx
except ImportError:  # optional peer
    optx = None

PEER_MAP = vf.DenseMap(form="log_space")   # the map of the peers (b), (e), (j); --peer-map



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
        for _t in range(1, max_steps + 1):
            new = (1 - damping) * numpy_step(psi, x, beta, lp) + damping * psi
            res = np.sqrt(((new - psi) ** 2).sum())
            psi = new
            if res < tol:
                break
        out.append(psi)
        steps.append(_t)
    return np.stack(out), np.array(steps)


def make_jax_single(x, lp, damping, tol, max_steps):
    """(b): one jitted ``while_loop`` per β, called from a Python loop over β; the
    damped step and stopping rule of ``Damped`` (‖ψ' − ψ‖_F < tol or ``max_steps``)."""
    F = PEER_MAP

    @jax.jit
    def one(beta, psi0):
        def cond(s):
            _, t, res = s
            return (t < max_steps) & (res >= tol)

        def body(s):
            psi, t, _ = s
            new = (1 - damping) * F(psi, x, beta, lp) + damping * psi
            return new, t + 1, jnp.sqrt(jnp.sum((new - psi) ** 2))

        psi, t, _ = jax.lax.while_loop(cond, body, (psi0, jnp.int32(0), jnp.asarray(jnp.inf, psi0.dtype)))
        return psi, t

    def sweep(betas, psi0):
        res = [one(b, psi0) for b in betas]
        return jnp.stack([r[0] for r in res]), jnp.stack([r[1] for r in res])

    return sweep


def step_data_first(psi, x, beta, log_prior):
    """F(ψ) (K, d) from log m in the data-first (n, K) layout: the dense map before
    2026-12-01, when it became tiles-first. Under a wide ``vmap`` over β (the
    peer's loop, and ``Vmapped`` with all β) this layout can be the
    faster one, so (i) gives the peer its choice."""
    logits = -squared_distances(x, psi) / (2 * beta)                               # (n, K)
    log_c = jax.nn.logsumexp(logits + log_prior[None, :], axis=1, keepdims=True)   # (n, 1)
    return jax.nn.softmax(logits - log_c, axis=0).T @ x


@dataclasses.dataclass(frozen=True)
class DataFirstMap(StepMap):
    """:func:`step_data_first` as a step map for ``solve`` (benchmarks/floor.py row (l))."""

    def evaluate(self, psi, x, beta, log_prior):
        logits = -squared_distances(x, psi) / (2 * beta)                         # (n, K)
        log_c = jax.nn.logsumexp(logits + log_prior[None, :], axis=1)            # (n,)
        log_m = logits - log_c[:, None]
        return MapValue(psi=jax.nn.softmax(log_m, axis=0).T @ x, log_c=log_c,
                        log_mass=jax.nn.logsumexp(log_m, axis=0))

    def order_parameter(self, psi, x, beta, log_prior):
        return vf.DenseMap().order_parameter(psi, x, beta, log_prior)


def make_optimistix(x, lp, damping, tol, max_steps, step=None, loop="vmap"):
    """(e), (i), (j): optimistix fixed-point iteration of the damped map ``step``
    (default the dense map), ``jax.jit`` of ``jax.vmap`` (``loop="vmap"``) or of
    ``jax.lax.map`` (``loop="map"``, one β at a time) over β.

    Returns ``sweep(betas, psi0) -> (psi (B, K, d), steps (B,))``."""
    step = PEER_MAP if step is None else step
    solver = optx.FixedPointIteration(rtol=0.0, atol=tol, norm=optx.two_norm)

    def damped(psi, beta):
        return (1 - damping) * step(psi, x, beta, lp) + damping * psi

    def one(beta, psi0):
        sol = optx.fixed_point(damped, solver, psi0, beta, max_steps=max_steps, throw=False)
        return sol.value, sol.stats["num_steps"]

    if loop == "vmap":
        return jax.jit(jax.vmap(one, in_axes=(0, None)))
    return jax.jit(lambda betas, psi0: jax.lax.map(lambda b: one(b, psi0), betas))


def memory_limit() -> int:
    """Bytes of memory of the default device (host RAM on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return physical_memory()


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
    """The CPU model, as run records write it (:func:`vaefp_jax.runs.cpu_model`)."""
    return cpu_model()


def cpu_description() -> str:
    """The CPU model (:func:`cpu_name`), its widest vector ISA and core count."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next(line for line in fh if line.startswith("flags")).split()
        isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "SSE/AVX")
    except (OSError, StopIteration):
        isa = "ISA unknown"
    return f"{cpu_name()} ({isa}, {os.cpu_count()} cores)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-betas", type=int, default=64, help="B; issue 7: 64, 256, 1024")
    ap.add_argument("--k", type=int, default=32, help="k x k tile grid; issue 7: 32, 128")
    ap.add_argument("--n", type=int, default=120, help="data points; issue 7: 120, 10000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=400, help="step cap (Appendix A: 400)")
    ap.add_argument("--methods", default="abcdehj", help="rows to run, letters of abcdefhij (default abcdehj)")
    ap.add_argument("--skip-numpy", action="store_true", help="same as leaving 'a' out of --methods")
    ap.add_argument("--tile-chunk", type=int, default=1024, help="(f): tiles per block")
    ap.add_argument("--data-chunk", type=int, default=1024, help="(f): data points per block")
    ap.add_argument("--peer-map", default="log_space", choices=["log_space", "one_exponential"],
                    help="the map the peers (b), (e), (j) iterate (DenseMap(form=...))")
    ap.add_argument("--no-warmup", action="store_true",
                    help="time the first call of (c)-(j), compilation (~1 s) included, instead of running "
                         "each once untimed first: for the large settings, where a run takes minutes")
    args = ap.parse_args(argv)
    global PEER_MAP
    PEER_MAP = vf.DenseMap(form=args.peer_map)
    methods = set(args.methods) - ({"a"} if args.skip_numpy else set())
    if not methods <= set("abcdefhij"):
        ap.error(f"--methods takes letters of abcdefhij, got {args.methods!r} (row (g) was removed)")

    x64 = vf.datasets.three_clusters(args.n)
    grid = vf.LatentGrid.uniform(args.k)
    B, K, max_steps = args.num_betas, grid.num_tiles, args.max_steps
    betas = np.geomspace(1e-4, 1.0, B).astype(np.float32)
    paper = dataclasses.replace(vf.Damped.paper(), max_steps=max_steps)
    x = jnp.asarray(x64, jnp.float32)
    lp = jnp.asarray(grid.log_prior, jnp.float32)
    psi0 = vf.initial_psi(x, grid, paper.init_noise)
    dev = jax.devices()[0]
    limit = memory_limit()
    print(f"# {time.strftime('%Y-%m-%d')}  device: {dev.device_kind} ({jax.default_backend()}), "
          f"CPU: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}; vaefp_jax {vf.__version__}"
          f"{'; optimistix ' + optx.__version__ if optx is not None and hasattr(optx, '__version__') else ''}")
    print(f"# {vf.native.status()}")
    print(f"# problem: n={args.n} three-cluster points, {args.k}x{args.k} grid (K={K}), "
          f"B={B} beta in [1e-4, 1], paper protocol (max_steps={max_steps}), float32; "
          f"peers iterate {PEER_MAP!r}, solve the default {vf.DenseMap()!r}")
    warm = not args.no_warmup
    if not warm:
        print("# --no-warmup: times of (c)-(j) include their compilation")

    def fits(label, lanes):
        need = dense_bytes(args.n, K, 4, lanes)
        if need <= 0.8 * limit:
            return True
        print(f"# {label}: skipped, its dense intermediates (~{need / 1e9:.1f} GB for {lanes} beta at once) "
              f"exceed 80% of the {limit / 1e9:.1f} GB memory; use (f) or fewer beta")
        return False

    rows, ref = [], {}  # ref: psi and steps of (c), the agreement reference for (d)-(j)

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
    auto_map = default_step_map(args.n, K, x.shape[1])
    auto_lanes = min(B, default_batch_size(B, *auto_map.lane_shape(args.n, K), 4))
    auto_name = "dense map" if isinstance(auto_map, vf.DenseMap) else repr(auto_map)
    dense_auto = isinstance(auto_map, vf.DenseMap)
    for letter, label, schedule, lanes in [
            ("c", f"(c) vaefp_jax.solve (default: {auto_name}, pool of {auto_lanes} slots)", None, auto_lanes),
            ("d", "(d) solve(schedule=Vmapped(batch_size=B)): one vmapped while_loop", vf.Vmapped(batch_size=B), B),
            ("h", f"(h) solve(schedule=Vmapped()), chunks of {auto_lanes}", vf.Vmapped(), auto_lanes)]:
        if letter not in methods or (dense_auto and not fits(label, lanes)):
            continue
        call = lambda schedule=schedule: vf.solve(x, betas, grid, psi0=psi0, iteration=paper, schedule=schedule,
                                                  throw=False)
        t, r = best_time(call, args.repeats, warm)
        rows.append((label, t, int(B * np.max(r.steps)) if letter == "d" else int(np.sum(r.steps))))
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
    for letter, label, step, loop, lanes in (
            ("e", "(e) optimistix FixedPointIteration, jit(vmap)", None, "vmap", B),
            ("i", "(i) optimistix as (e), data-first dense map", step_data_first, "vmap", B),
            ("j", "(j) optimistix FixedPointIteration, jit(lax.map): one beta at a time", None, "map", 1)):
        if letter in methods and optx is None:
            print(f"# ({letter}) skipped: optimistix is not installed (pip install optimistix, or the 'bench' extra)")
        elif letter in methods and fits(label, lanes):
            peer = make_optimistix(x, lp, jnp.float32(0.1), 1e-3, max_steps, step, loop)
            t, (psi_e, steps_e) = best_time(lambda: peer(betas, psi0), args.repeats, warm)
            rows.append((label, t, int(B * np.max(steps_e)) if loop == "vmap" else int(np.sum(steps_e))))
            agreement(label, psi_e, steps_e)
    if "f" in methods:
        blocked = vf.BlockedMap(tile_chunk=args.tile_chunk, data_chunk=args.data_chunk)
        label = f"(f) solve(step_map=BlockedMap), {args.tile_chunk}x{args.data_chunk} blocks"
        call = lambda: vf.solve(x, betas, grid, psi0=psi0, iteration=paper, step_map=blocked, throw=False)
        t, r = best_time(call, args.repeats, warm)
        rows.append((label, t, int(np.sum(r.steps))))
        agreement(label, r.psi, r.steps)

    base = lambda tag: next((t for name, t, _ in rows if name.startswith(tag)), None)
    base_a, base_b = base("(a)"), base("(b)")
    peers = [(name, t) for name, t, _ in rows if name[:3] in ("(a)", "(b)", "(e)", "(i)", "(j)")]
    peer_name, base_p = min(peers, key=lambda p: p[1]) if peers else ("-", None)
    if peers:
        print(f"# fastest peer: {peer_name}")
    print(f"| method | wall time (s) | map evaluations | time / evaluation (us) | vs (a) NumPy | vs (b) JAX loop "
          f"| vs fastest peer {peer_name[:3]} |")
    print("|---|---|---|---|---|---|---|")
    for name, t, evals in rows:
        ra = f"{base_a / t:.1f}x" if base_a else "-"
        rb = f"{base_b / t:.2f}x" if base_b else "-"
        rp = f"{base_p / t:.2f}x" if base_p else "-"
        print(f"| {name} | {t:.3f} | {evals} | {t / evals * 1e6:.0f} | {ra} | {rb} | {rp} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
