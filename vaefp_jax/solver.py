"""Batched fixed-point sweeps of eq. (15) over many β at once.

``solve(x, betas, grid)`` runs, for every β of ``betas`` (B,), the damped
iteration

    ψ^{t+1} = (1 − damping) F(ψ^t) + damping ψ^t,        F the map of eq. (15),

until ‖ψ^{t+1} − ψ^t‖_F < tol or ``max_steps``. All β run in one jitted call.
By default ("pool" schedule) a ``lax.while_loop`` advances ``batch_size`` slots
at once, each holding one β (the map ``vmap``-ed over the slots); a slot whose
β has stopped writes it out and starts the next waiting β in the same step, so
converged β stop costing work and every step stays wide. "fused" (``vmap`` over
per-β ``while_loop``s, chunked by ``lax.map``) is kept for trajectories;
"compact" re-batches the running β on the host. All three give the same
fixed points and step counts (tested).

The paper's protocol (Appendix A), :meth:`Protocol.paper`:
exponential smoothing with α = 0.9, at most 400 steps, stop when the Euclidean
(Frobenius) distance between successive ψ is below 1e-3, ψ initialised at the
tile centres plus uniform noise in [−0.1, 0.1]. *Reading of α*: we take α as
the smoothing factor of standard exponential smoothing, the weight of the new
value, s_t = α F(ψ^{t−1}) + (1 − α) s_{t−1}; so ``damping = 1 − α = 0.1``. The
other reading (α the weight of the old iterate) is ``Protocol.paper(alpha_on_old=True)``,
``damping = 0.9``; it reaches the same fixed points, ~9× slower.

:meth:`Protocol.tight` is undamped (the map is coordinate descent on the
free energy, so damping is not needed for stability) with a tolerance near the
working precision, for accurate fixed points (derivatives, phase detection).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate, linalg
from vaefp_jax.fixed_point import _step
from vaefp_jax.grid import LatentGrid

__all__ = ["Protocol", "SolveResult", "solve", "initial_psi", "iterate", "default_batch_size", "default_step_map",
           "resolve_defaults"]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How to iterate: ``damping`` (weight of the previous iterate, in [0, 1)),
    ``tol`` (on the Frobenius norm of ψ^{t+1} − ψ^t; ``None``: by dtype, see
    :meth:`tight`), ``max_steps`` and ``init_noise`` (half-width of the uniform
    noise added to the initial ψ)."""

    damping: float = 0.1
    tol: float | None = 1e-3
    max_steps: int = 400
    init_noise: float = 0.1

    @classmethod
    def paper(cls, alpha: float = 0.9, alpha_on_old: bool = False) -> "Protocol":
        """Appendix A. ``alpha`` is the exponential-smoothing factor; by default it
        weights the new map value (``damping = 1 − alpha``)."""
        damping = alpha if alpha_on_old else 1.0 - alpha
        return cls(damping=damping, tol=1e-3, max_steps=400, init_noise=0.1)

    @classmethod
    def tight(cls, max_steps: int = 20_000) -> "Protocol":
        """Undamped, tolerance 1e-10 in float64 and 1e-5 in float32 (``tol=None``)."""
        return cls(damping=0.0, tol=None, max_steps=max_steps, init_noise=0.1)

    def with_overrides(self, damping=None, tol=None, max_steps=None) -> "Protocol":
        """This protocol with the given fields replaced (``None`` keeps a field)."""
        over = {k: v for k, v in dict(damping=damping, tol=tol, max_steps=max_steps).items() if v is not None}
        return dataclasses.replace(self, **over)

    def resolved_tol(self, dtype) -> float:
        if self.tol is not None:
            return float(self.tol)
        return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5

    def __post_init__(self):
        if not (0.0 <= float(self.damping) < 1.0):
            raise ValueError(f"damping must be in [0, 1), got {self.damping}")
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
        if isinstance(self.max_steps, bool) or int(self.max_steps) != self.max_steps or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps}")
        _validate.check_positive("init_noise", self.init_noise, allow_zero=True)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["beta", "psi", "steps", "converged", "residual", "trajectory"],
    meta_fields=["tol"],
)
@dataclasses.dataclass(frozen=True)
class SolveResult:
    """What :func:`solve` returns (a pytree).

    Attributes:
      beta: (B,) the β values.
      psi: (B, K, d) the last iterate (the fixed point where ``converged``).
      steps: (B,) int32 map evaluations used.
      converged: (B,) bool, ``residual < tol`` with ψ finite.
      residual: (B,) ‖ψ^{t} − ψ^{t−1}‖_F at the last step.
      trajectory: (B, T, K, d) ψ every ``record_every`` steps (entry 0 is ψ^0;
        entries past a β's stop repeat its last ψ), or ``None``.
      tol: the tolerance used.
    """

    beta: jax.Array
    psi: jax.Array
    steps: jax.Array
    converged: jax.Array
    residual: jax.Array
    trajectory: jax.Array | None
    tol: float

    def warn_if_not_converged(self, stacklevel: int = 2) -> None:
        """A ``RuntimeWarning`` naming the β values that did not converge."""
        if not _validate.is_concrete(self.converged):
            return  # under jit: nothing to report yet
        conv = np.asarray(self.converged)
        if conv.all():
            return
        bad = np.asarray(self.beta)[~conv]
        shown = ", ".join(f"{b:.4g}" for b in bad[:8]) + (", …" if bad.size > 8 else "")
        warnings.warn(
            f"{bad.size} of {conv.size} β did not converge to tol={self.tol:g} "
            f"(β = {shown}); see SolveResult.converged and .residual",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )


def initial_psi(x, grid: LatentGrid, noise: float = 0.1, key=None) -> jax.Array:
    """The initial decoder ψ^0, shape (K, d).

    * d = d_z (the paper): the tile centres ``grid.z`` plus i.i.d. uniform noise in
      [−noise, noise] (Appendix A).
    * d ≠ d_z (our choice): the grid laid into the data's principal subspace,
      ψ^0_a = mean + Σ_k (z_ak / s) 2√λ_k v_k with (λ_k, v_k) the top-d_z
      eigenpairs of the (1/n) covariance and s the half-extent of the interior
      tiles' centres, so the grid spans ±2 standard deviations along each principal
      axis; plus uniform noise of half-width ``noise`` times the data's RMS spread.

    ``key`` defaults to ``PRNGKey(0)``: the same call gives the same ψ^0.
    """
    _validate.check_data(x)
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    key = jax.random.PRNGKey(0) if key is None else key
    z = jnp.asarray(grid.z, dtype)
    n, d = x.shape
    if d == grid.dim:
        centre, scale = z, 1.0
    else:
        mean = x.mean(axis=0)
        xc = x - mean
        cov = xc.T @ xc / n
        lam, vec = linalg.eigh(cov)
        order = jnp.argsort(lam)[::-1]
        m = min(grid.dim, d)
        lam, vec = lam[order][:m], vec[:, order][:, :m]
        half = max(float(np.max(np.abs(grid.z[np.isfinite(grid.z)]))), 1e-12)
        coords = z[:, :m] / half
        centre = mean + (coords * 2 * jnp.sqrt(jnp.maximum(lam, 0))) @ vec.T
        scale = jnp.sqrt(jnp.sum(jnp.maximum(lam, 0)) / max(m, 1))
    u = jax.random.uniform(key, (grid.num_tiles, d), dtype, -1.0, 1.0)
    return centre + noise * scale * u


def initial_batch(x, grid: LatentGrid, psi0, init_noise: float, key, B: int, dtype,
                  broadcast: bool = True) -> jax.Array:
    """ψ^0 for B problems: :func:`initial_psi` when ``psi0`` is None, else ``psi0``
    (K, d) shared or (B, K, d) one per problem, validated. Returned as (B, K, d),
    or, with ``broadcast=False``, a shared ψ^0 stays (K, d) (no B-fold copy)."""
    if psi0 is None:
        psi0 = initial_psi(x, grid, init_noise, key)
    else:
        check_initial(psi0, x, grid.num_tiles, B)
    psi0 = jnp.asarray(psi0, dtype)
    if broadcast:
        psi0 = jnp.broadcast_to(psi0, (B, grid.num_tiles, np.shape(x)[1]))
    return psi0


def check_initial(psi0, x, num_tiles: int, B: int) -> None:
    """``psi0`` is (K, d) or (B, K, d), finite, with x's data dimension."""
    _validate.check_psi(psi0, x, name="psi0", batched=None)
    if np.shape(psi0)[-2] != num_tiles:
        raise ValueError(f"psi0 has {np.shape(psi0)[-2]} tiles but the grid has {num_tiles}")
    if np.ndim(psi0) == 3 and np.shape(psi0)[0] != B:
        raise ValueError(f"psi0 has {np.shape(psi0)[0]} rows but betas has {B}")


def damped_update(F, psi, damping):
    """One damped step ψ' = (1 − damping) F(ψ) + damping ψ and its residual
    ‖ψ' − ψ‖_F: the loop body every schedule of :func:`solve` shares."""
    new = (1 - damping) * F(psi) + damping * psi
    return new, jnp.sqrt(jnp.sum((new - psi) ** 2))


def iterate(F, psi0, damping, tol, max_steps: int, record_every: int):
    """Damped fixed-point iteration of ``F`` from ``psi0`` for one problem.

    Returns (psi, steps, residual, trajectory-or-None)."""
    dtype = psi0.dtype
    n_rec = (max_steps // record_every + 1) if record_every else 0

    def cond(state):
        psi, t, res = state[:3]
        return (t < max_steps) & (res >= tol)  # a NaN residual compares False: stops

    def body(state):
        psi, t, res = state[:3]
        new, res = damped_update(F, psi, damping)
        t = t + 1
        if not record_every:
            return new, t, res
        traj = state[3]
        traj = jax.lax.cond(
            t % record_every == 0,
            lambda tr: tr.at[t // record_every].set(new),
            lambda tr: tr,
            traj,
        )
        return new, t, res, traj

    init = (psi0, jnp.int32(0), jnp.asarray(jnp.inf, dtype))
    if record_every:
        init = init + (jnp.broadcast_to(psi0, (n_rec,) + psi0.shape),)
    out = jax.lax.while_loop(cond, body, init)
    psi, steps, res = out[:3]
    traj = None
    if record_every:
        # Fill the entries after this problem stopped with its last iterate.
        idx = jnp.arange(n_rec)
        last = steps // record_every
        traj = jnp.where((idx > last)[:, None, None], psi[None], out[3])
    return psi, steps, res, traj


DENSE_COPIES = 3  # (n, K) arrays the dense map keeps per β lane (XLA's plans: 2–3; docs/scale.md)
CPU_CACHE_BYTES = 2 * 2**20  # CPU: the per-step working set of all lanes that stays in cache (below)
STREAM_MIN_POINTS = 2048  # CPU: from this many points (and STREAM_MIN_ELEMENTS) the blocked map is faster
STREAM_MIN_ELEMENTS = 1 << 23
STREAM_MAX_D = 64  # beyond, the blocked map's two distance products cost more than the cache saves


def default_batch_size(num_betas: int, num_points: int | None = None, num_tiles: int | None = None,
                       itemsize: int = 4, *, backend: str | None = None, memory_bytes: int | None = None) -> int:
    """β values iterated together (the slots of ``schedule="pool"``, the vmap
    width of ``"fused"``). ``num_points`` × ``num_tiles`` is the (n, K) array one
    lane's map forms (for a blocked map: one block).

    On CPU, 8, or fewer when the problem size is given and ``DENSE_COPIES``
    such arrays per lane would not fit in ``CPU_CACHE_BYTES``: wide enough to keep
    the vector units and both cores busy while the intermediates stay in cache
    (measured per β-step with the tiles-first dense map on 2 CPU cores,
    docs/scale.md: at n = 120 one slot is fastest for K = 1024 and 16 384, 4 to 8
    slots for K ≤ 256, where one lane's arrays are small). On GPU/TPU all β at once,
    for parallelism, capped by memory when the problem size is given: at most
    half the device memory (``memory_bytes``, default the device's
    ``bytes_limit``) for ``DENSE_COPIES`` (n, K) arrays per lane.
    """
    backend = backend or jax.default_backend()
    per_lane = DENSE_COPIES * int(num_points) * int(num_tiles) * int(itemsize) if num_points and num_tiles else 0
    if backend == "cpu":
        lanes = 8 if not per_lane else min(8, CPU_CACHE_BYTES // per_lane)
        return max(1, min(num_betas, lanes))
    lanes = num_betas
    if per_lane:
        if memory_bytes is None:
            stats = jax.devices()[0].memory_stats() or {}
            memory_bytes = stats.get("bytes_limit")
        if memory_bytes:
            lanes = min(lanes, int(0.5 * memory_bytes) // per_lane)
    return max(1, lanes)


def default_step_map(num_points: int, num_tiles: int, dim: int, *, backend: str | None = None):
    """The map ``solve`` uses when none is given: the dense one (``None``), except
    on CPU for large problems (n ≥ ``STREAM_MIN_POINTS``, n K ≥
    ``STREAM_MIN_ELEMENTS``, d ≤ ``STREAM_MAX_D``), where the blocked map
    :class:`vaefp_jax.streaming.StreamedMap` (its default 1024 × 1024 blocks) keeps its
    working set in cache: per β-step 1.36× faster than the dense map at
    n = 10⁴, K = 1024 and 1.7× at n = 10⁴ or 2048, K ≥ 4096; equal at
    n = 4096, K = 1024; the dense map is faster below (2× at n = 2048, K = 2116;
    4× at n = 120, K = 16 384; docs/scale.md). Same values up to rounding."""
    backend = backend or jax.default_backend()
    if (backend == "cpu" and num_points >= STREAM_MIN_POINTS and num_points * num_tiles >= STREAM_MIN_ELEMENTS
            and dim <= STREAM_MAX_D):
        from vaefp_jax.streaming import StreamedMap  # streaming builds on this module

        return StreamedMap()
    return None


def resolve_defaults(step_map, batch_size, num_betas: int, num_points: int, num_tiles: int, dim: int,
                     itemsize: int):
    """(step_map, batch_size) with ``None`` replaced by :func:`default_step_map`
    and :func:`default_batch_size`; the lanes are sized by the logits one lane of
    the chosen map holds at once (``step_map.lane_shape(n, K)`` where the map
    defines it, as the blocked and fused maps do; else (n, K))."""
    if step_map is None:
        step_map = default_step_map(num_points, num_tiles, dim) or _step
    if batch_size is None:
        shape = step_map.lane_shape(num_points, num_tiles) if hasattr(step_map, "lane_shape") \
            else (num_points, num_tiles)
        batch_size = default_batch_size(num_betas, *shape, itemsize)
    return step_map, int(batch_size)


@functools.partial(jax.jit, static_argnames=("max_steps", "record_every", "batch_size", "step_map"))
def _solve_batched(x, betas, log_prior, psi0, damping, tol, max_steps, record_every, batch_size,
                   step_map=_step):
    shared = psi0.ndim == 2  # one ψ^0 for all β: not copied B times

    def one(args):
        beta, p0 = (args, psi0) if shared else args
        F = lambda psi: step_map(psi, x, beta, log_prior)
        return iterate(F, p0, damping, tol, max_steps, record_every)

    xs = betas if shared else (betas, psi0)
    if batch_size >= betas.shape[0]:
        psi, steps, res, traj = jax.vmap(one)(xs)
    else:
        psi, steps, res, traj = jax.lax.map(one, xs, batch_size=batch_size)
    converged = (res < tol) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    return psi, steps, res, converged, traj


@functools.partial(jax.jit, static_argnames=("step_map",))
def _advance(x, betas, log_prior, psi, t, res, damping, tol, t_stop, step_map=_step):
    """Continue every lane's damped iteration from (ψ, t, residual) until its
    tolerance or step ``t_stop`` (per lane), whichever comes first."""

    def one(beta, psi, t, res, t_stop):
        def cond(s):
            return (s[1] < t_stop) & (s[2] >= tol)

        def body(s):
            new, res = damped_update(lambda p: step_map(p, x, beta, log_prior), s[0], damping)
            return new, s[1] + 1, res

        return jax.lax.while_loop(cond, body, (psi, t, res))

    return jax.vmap(one)(betas, psi, t, res, t_stop)


@functools.partial(jax.jit, static_argnames=("max_steps", "width", "step_map"))
def _solve_pooled(x, betas, log_prior, psi0, damping, tol, max_steps, width, step_map=_step):
    """One jitted loop over ``width`` slots, each iterating one β; a slot whose β
    has stopped (tolerance or ``max_steps``) writes its result out and takes the
    next waiting β in the same step ("continuous batching"). Every step
    advances ``width`` live β until the queue runs dry, so converged β stop
    costing work without leaving the jit. ``psi0`` is (K, d) shared or (B, K, d)."""
    B = betas.shape[0]
    shared = psi0.ndim == 2
    dtype = x.dtype

    def start(idx):  # ψ^0 of β number idx (clipped; empty slots are masked anyway)
        return psi0 if shared else psi0[jnp.minimum(idx, B - 1)]

    slot = jnp.arange(width)
    init = dict(
        psi=jnp.broadcast_to(psi0, (width,) + psi0.shape) if shared else psi0[jnp.minimum(slot, B - 1)],
        who=jnp.where(slot < B, slot, -1),  # β index per slot, −1 when empty
        t=jnp.zeros(width, jnp.int32),
        res=jnp.full(width, jnp.inf, dtype),
        queue=jnp.int32(min(width, B)),  # next β to start
        out_psi=jnp.zeros((B,) + psi0.shape[-2:], dtype),
        out_t=jnp.zeros(B, jnp.int32),
        out_res=jnp.full(B, jnp.inf, dtype),
    )
    update = jax.vmap(lambda psi, beta: damped_update(lambda p: step_map(p, x, beta, log_prior), psi, damping))

    def cond(s):
        return jnp.any(s["who"] >= 0)

    def body(s):
        live = s["who"] >= 0
        beta = betas[jnp.maximum(s["who"], 0)]
        new, res = update(s["psi"], beta)
        t = s["t"] + 1
        stop = live & ((t >= max_steps) | ~(res >= tol))  # a NaN residual stops
        dest = jnp.where(stop, s["who"], B)  # B: dropped by the scatter
        out_psi = s["out_psi"].at[dest].set(new, mode="drop")
        out_t = s["out_t"].at[dest].set(t, mode="drop")
        out_res = s["out_res"].at[dest].set(res, mode="drop")
        nxt = s["queue"] + jnp.cumsum(stop) - 1  # the β each stopped slot takes next
        refill = stop & (nxt < B)
        psi = jnp.where(refill[:, None, None], jax.vmap(start)(nxt), new)
        who = jnp.where(stop, jnp.where(refill, nxt, -1), s["who"])
        return dict(psi=psi, who=who, t=jnp.where(stop, 0, t), res=jnp.where(stop, jnp.inf, res),
                    queue=s["queue"] + jnp.sum(stop).astype(jnp.int32), out_psi=out_psi, out_t=out_t,
                    out_res=out_res)

    out = jax.lax.while_loop(cond, body, init)
    psi, res = out["out_psi"], out["out_res"]
    converged = (res < tol) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    return psi, out["out_t"], res, converged, None


def _solve_compacted(x, betas, log_prior, psi0, damping, tol, max_steps, chunk_steps, step_map):
    """Host-scheduled sweep: advance the still-running β ``chunk_steps`` at a
    time in one vmapped loop, then drop the converged ones. Batches are padded
    to powers of two so that at most log2(B) + 1 shapes are compiled."""
    B = betas.shape[0]
    psi = np.array(psi0)
    t = np.zeros(B, np.int32)
    res = np.full(B, np.inf, psi.dtype)
    active = np.ones(B, bool)
    while active.any():
        idx = np.nonzero(active)[0]
        size = 1 << int(np.ceil(np.log2(len(idx))))
        idx_p = np.concatenate([idx, np.repeat(idx[-1:], size - len(idx))])
        stop = np.minimum(t[idx_p] + chunk_steps, max_steps).astype(np.int32)
        p, tt, rr = _advance(x, betas[idx_p], log_prior, jnp.asarray(psi[idx_p]), jnp.asarray(t[idx_p]),
                             jnp.asarray(res[idx_p]), damping, tol, jnp.asarray(stop), step_map=step_map)
        m = len(idx)
        psi[idx], t[idx], res[idx] = np.asarray(p)[:m], np.asarray(tt)[:m], np.asarray(rr)[:m]
        active = (t < max_steps) & (res >= float(tol))  # a NaN residual compares False: stops
    psi = jnp.asarray(psi)
    res = jnp.asarray(res)
    converged = (res < tol) & jnp.all(jnp.isfinite(psi), axis=(1, 2))
    return psi, jnp.asarray(t), res, converged, None


def solve(
    x,
    betas,
    grid: LatentGrid,
    *,
    psi0=None,
    protocol: Protocol | None = None,
    damping: float | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    key=None,
    record_every: int = 0,
    batch_size: int | None = None,
    step_map=None,
    schedule: str = "auto",
    chunk_steps: int = 25,
    warn: bool = True,
) -> SolveResult:
    """Fixed points of eq. (15) for every β in ``betas``, in one jitted call.

    Args:
      x: (n, d) data; its dtype sets the working precision (float64 needs
        ``jax.config.update("jax_enable_x64", True)``).
      betas: (B,) β values > 0.
      grid: the tile basis (prior masses and the initial ψ).
      psi0: initial decoder, (K, d) shared by all β or (B, K, d) one per β (warm
        starts); default :func:`initial_psi` with ``protocol.init_noise`` and ``key``,
        the same for every β.
      protocol: :class:`Protocol`; default :meth:`Protocol.paper`. ``damping``,
        ``tol`` and ``max_steps`` override its fields.
      key: PRNG key for the initial noise (default ``PRNGKey(0)``).
      record_every: if > 0, also return ψ every that many steps (the trajectories
        of Figures 3–4). 0 (default) records nothing and costs nothing.
      batch_size: β values iterated together (see :func:`default_batch_size`);
        the slot count of ``schedule="pool"``; the results do not depend on it.
      step_map: the map F as a hashable callable ``(psi, x, beta, log_prior) -> psi``
        (default :func:`default_step_map`: the dense eq. (15), or on CPU for large
        n the blocked :class:`vaefp_jax.streaming.StreamedMap`; pass one for
        problems whose n × K logits do not fit in memory, or
        :class:`vaefp_jax.fused.FusedMap` for the Pallas kernels on GPU).
      schedule: "auto" (default): "pool" when nothing is recorded, else "fused".
        "fused": the whole sweep is one jitted call (``lax.map``
        over vmapped ``while_loop``s of ``batch_size`` β). "compact": a host loop
        advances all still-running β ``chunk_steps`` steps at a time in one
        vmapped loop and drops the converged ones between chunks, so converged β
        stop costing work and the batch stays wide (not traceable under ``jit``;
        no ``record_every``). "pool": one jitted loop over ``batch_size`` slots;
        a slot whose β has stopped hands its result out and starts the next
        waiting β in the same step, so every step advances ``batch_size`` live β
        until the queue runs dry (traceable; no ``record_every``). Same fixed
        points and step counts whichever schedule.
      chunk_steps: steps between compactions (``schedule="compact"``).
      warn: emit a ``RuntimeWarning`` naming the β that did not converge.

    Returns:
      :class:`SolveResult` with ``psi`` (B, K, d), ``steps``, ``converged``,
      ``residual`` (B,).
    """
    protocol = (protocol or Protocol.paper()).with_overrides(damping, tol, max_steps)
    _validate.check_data(x)
    _validate.check_beta(betas, name="betas", batched=True)
    _validate.check_log_prior(grid.log_prior)
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if int(record_every) != record_every or record_every < 0:
        raise ValueError(f"record_every must be an integer ≥ 0, got {record_every}")
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    betas = jnp.asarray(betas, dtype)
    B = betas.shape[0]
    if schedule not in ("auto", "fused", "compact", "pool"):
        raise ValueError(f"schedule must be 'auto', 'fused', 'compact' or 'pool', got {schedule!r}")
    if schedule == "auto":
        schedule = "fused" if record_every else "pool"
    psi0 = initial_batch(x, grid, psi0, protocol.init_noise, key, B, dtype, broadcast=schedule == "compact")
    tol_ = protocol.resolved_tol(dtype)
    step_map, batch_size = resolve_defaults(step_map, batch_size, B, x.shape[0], grid.num_tiles, x.shape[1],
                                            x.dtype.itemsize)
    if schedule == "pool":
        if record_every:
            raise ValueError("record_every needs schedule='fused'")
        psi, steps, res, converged, traj = _solve_pooled(
            x, betas, jnp.asarray(grid.log_prior, dtype), psi0, jnp.asarray(protocol.damping, dtype),
            jnp.asarray(tol_, dtype), max_steps=int(protocol.max_steps),
            width=int(min(batch_size, B)), step_map=step_map)
    elif schedule == "compact":
        if record_every:
            raise ValueError("record_every needs schedule='fused'")
        if int(chunk_steps) != chunk_steps or chunk_steps < 1:
            raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps}")
        psi, steps, res, converged, traj = _solve_compacted(
            x, betas, jnp.asarray(grid.log_prior, dtype), psi0, jnp.asarray(protocol.damping, dtype),
            jnp.asarray(tol_, dtype), int(protocol.max_steps), int(chunk_steps), step_map)
    else:
        psi, steps, res, converged, traj = _solve_batched(
            x, betas, jnp.asarray(grid.log_prior, dtype), psi0,
            jnp.asarray(protocol.damping, dtype), jnp.asarray(tol_, dtype),
            max_steps=int(protocol.max_steps), record_every=int(record_every),
            batch_size=int(batch_size), step_map=step_map,
        )
    result = SolveResult(beta=betas, psi=psi, steps=steps, converged=converged,
                         residual=res, trajectory=traj, tol=tol_)
    if warn:
        result.warn_if_not_converged(stacklevel=2)
    return result
