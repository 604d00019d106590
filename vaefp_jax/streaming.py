r"""The map of eq. (14)–(15) without the full n × K matrix: for large problems.

:func:`vaefp_jax.fixed_point.step` forms the logits ℓ_ib = −‖x_i − ψ_b‖²/2β as
one (n, K) array (and XLA keeps a few such arrays alive). For n = 10⁴ points
and a 128 × 128 grid that is 655 MB per β in float32, times the number of β
iterated together; see ``docs/scale.md``. :func:`step_streamed` computes the
same F(ψ) from (data_chunk, tile_chunk) blocks of the logits, in two passes:

1. **log c_i** = logsumexp_b(ℓ_ib + log π_b): for each block of data rows, a
   ``lax.scan`` over tile blocks keeps a running maximum and a running sum of
   exponentials (the online log-sum-exp), shape (n,).
2. **ψ_b** = Σ_i x_i m_ib / Σ_j m_jb with log m_ib = ℓ_ib − log c_i: the columns
   are independent given log c, so for each block of tiles a ``lax.scan`` over
   data blocks keeps, per tile, a running maximum of log m_ib over i, the
   running sum of exp(log m_ib − max) and the running weighted sum of the x_i
   (an online softmax over i, as in flash attention), shape (tile_chunk, d).

Live memory per β: a few (data_chunk, tile_chunk) blocks, plus (tile_chunk, d)
accumulators, plus ψ and x themselves. The price is computing every distance
twice (once per pass). Distances use the same formulas as
:func:`~vaefp_jax.fixed_point.squared_distances` (differences for d ≤ 64, the
matrix-product form centred on the *full* data mean for d > 64), so the result
equals ``step`` up to floating-point reassociation.

Chunks need not divide n or K: the tiles are padded with log π = −∞ (they add
nothing to c_i; their columns are computed and dropped) and the data with
log c = +∞ (so log m = −∞: they add nothing to any column).

:func:`solve_streamed` is :func:`vaefp_jax.solve` with this map; its iteration
is :func:`vaefp_jax.solver.iterate`, the same loop ``solve`` runs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from vaefp_jax.fixed_point import _DIRECT_MAX_D, _cast, _check, squared_distances
from vaefp_jax.grid import LatentGrid
from vaefp_jax.solver import Protocol, SolveResult, solve

__all__ = ["StreamedMap", "step_streamed", "solve_streamed", "DEFAULT_TILE_CHUNK", "DEFAULT_DATA_CHUNK"]

# 1024 × 1024 blocks (4 MB of float32 logits): per β-step at n = 10⁴, K = 1024 on 2 CPU cores,
# 15.3 ms against 18.6 ms for 256 × 2048 (docs/scale.md); solve's default blocked map too.
DEFAULT_TILE_CHUNK = 1024
DEFAULT_DATA_CHUNK = 1024


def _check_chunk(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- blocks


def _distance_coordinates(x, psi):
    """x (n, d), ψ (K, d) in the coordinates the distances are computed in: as
    given for d ≤ 64, centred on the data mean for d > 64 (as ``squared_distances``)."""
    if x.shape[-1] <= _DIRECT_MAX_D:
        return x, psi
    mu = jnp.mean(x, axis=0)
    return x - mu, psi - mu


def _block_squared_distances(xb, pb):
    """‖x_i − ψ_b‖² for a block, (nc, kc), from rows already in distance coordinates."""
    if xb.shape[-1] <= _DIRECT_MAX_D:
        return squared_distances(xb, pb)
    sq = jnp.sum(xb * xb, axis=1)[:, None] + jnp.sum(pb * pb, axis=1)[None, :] - 2 * xb @ pb.T
    return jnp.maximum(sq, 0)


def _blocks(a, chunk: int, fill):
    """Pad the leading axis of ``a`` with ``fill`` to a multiple of ``chunk`` and
    split it: (m, ...) → (ceil(m / chunk), chunk, ...)."""
    m = a.shape[0]
    pad = -m % chunk
    if pad:
        widths = [(0, pad)] + [(0, 0)] * (a.ndim - 1)
        a = jnp.pad(a, widths, constant_values=fill)
    return a.reshape((-1, chunk) + a.shape[1:])


def _safe_max(m):
    """A finite shift for exp(v − m): m where finite, 0 where m = −∞ (all-empty)."""
    return jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))


# --------------------------------------------------------------------------- passes


def _log_c(xd_blocks, pd_blocks, lp_blocks, beta):
    """Pass 1: log c_i, shape (num_data_blocks · data_chunk,).

    xd_blocks (Nd, nc, d), pd_blocks (Nt, kc, d) in distance coordinates;
    lp_blocks (Nt, kc) log π (−∞ on padding)."""

    def one_data_block(xb):
        def add_tiles(carry, tiles):
            run_max, run_sum = carry                                  # (nc,), (nc,)
            pb, lpb = tiles
            v = -_block_squared_distances(xb, pb) / (2 * beta) + lpb[None, :]   # (nc, kc)
            new_max = jnp.maximum(run_max, jnp.max(v, axis=1))
            shift = _safe_max(new_max)
            run_sum = run_sum * jnp.exp(run_max - shift) + jnp.sum(jnp.exp(v - shift[:, None]), axis=1)
            return (new_max, run_sum), None

        init = (jnp.full(xb.shape[:1], -jnp.inf, xb.dtype), jnp.zeros(xb.shape[:1], xb.dtype))
        (run_max, run_sum), _ = jax.lax.scan(add_tiles, init, (pd_blocks, lp_blocks))
        return run_max + jnp.log(run_sum)

    return jax.lax.map(one_data_block, xd_blocks).reshape(-1)


def _weighted_means(xd_blocks, x_blocks, log_c_blocks, pd_blocks, beta):
    """Pass 2: ψ_b = Σ_i x_i softmax_i(ℓ_ib − log c_i), shape (Nt · kc, d).

    x_blocks (Nd, nc, d) the data as given (the means are of x, not of the
    centred x); log_c_blocks (Nd, nc), +∞ on padded rows."""

    def one_tile_block(pb):
        def add_rows(carry, rows):
            run_max, run_sum, run_acc = carry                         # (kc,), (kc,), (kc, d)
            xdb, xb, lcb = rows
            lm = -_block_squared_distances(xdb, pb) / (2 * beta) - lcb[:, None]  # log m, (nc, kc)
            new_max = jnp.maximum(run_max, jnp.max(lm, axis=0))
            shift = _safe_max(new_max)
            rescale = jnp.exp(run_max - shift)
            w = jnp.exp(lm - shift[None, :])
            run_sum = run_sum * rescale + jnp.sum(w, axis=0)
            run_acc = run_acc * rescale[:, None] + w.T @ xb
            return (new_max, run_sum, run_acc), None

        kc, d = pb.shape[0], x_blocks.shape[-1]
        dtype = x_blocks.dtype
        init = (jnp.full((kc,), -jnp.inf, dtype), jnp.zeros((kc,), dtype), jnp.zeros((kc, d), dtype))
        (_, run_sum, run_acc), _ = jax.lax.scan(add_rows, init, (xd_blocks, x_blocks, log_c_blocks))
        return run_acc / run_sum[:, None]

    out = jax.lax.map(one_tile_block, pd_blocks)
    return out.reshape((-1, out.shape[-1]))


def _step_streamed(psi, x, beta, log_prior, tile_chunk: int, data_chunk: int):
    """F(ψ) (K, d) for cast, validated inputs; chunks are clipped to K and n."""
    (K, _), (n, _) = psi.shape, x.shape
    kc, nc = min(tile_chunk, K), min(data_chunk, n)
    xd, pd = _distance_coordinates(x, psi)
    xd_blocks = _blocks(xd, nc, 0)
    pd_blocks = _blocks(pd, kc, 0)
    lp_blocks = _blocks(log_prior, kc, -jnp.inf)
    log_c = _log_c(xd_blocks, pd_blocks, lp_blocks, beta)[:n]
    log_c_blocks = _blocks(log_c, nc, jnp.inf)
    new = _weighted_means(xd_blocks, _blocks(x, nc, 0), log_c_blocks, pd_blocks, beta)
    return new[:K]


@dataclasses.dataclass(frozen=True)
class StreamedMap:
    """The map F(ψ) of eq. (15) computed in (data_chunk, tile_chunk) blocks.

    Hashable by value, so it can be a static argument of ``jax.jit``; calling it
    has the signature of ``vaefp_jax.fixed_point._step``:
    ``(psi (K, d), x (n, d), beta (), log_prior (K,)) -> (K, d)``, traceable,
    no validation."""

    tile_chunk: int = DEFAULT_TILE_CHUNK
    data_chunk: int = DEFAULT_DATA_CHUNK

    def __post_init__(self):
        _check_chunk("tile_chunk", self.tile_chunk)
        _check_chunk("data_chunk", self.data_chunk)

    def __call__(self, psi, x, beta, log_prior):
        return _step_streamed(psi, x, beta, log_prior, self.tile_chunk, self.data_chunk)

    def lane_shape(self, num_points: int, num_tiles: int) -> tuple[int, int]:
        """The largest block of logits one β holds at once (sizes the default lanes)."""
        return min(self.data_chunk, num_points), min(self.tile_chunk, num_tiles)


@functools.partial(jax.jit, static_argnames=("F",))
def _jit_map(F, psi, x, beta, log_prior):
    return F(psi, x, beta, log_prior)


def step_streamed(psi, x, beta, log_prior, *, tile_chunk: int = DEFAULT_TILE_CHUNK,
                  data_chunk: int = DEFAULT_DATA_CHUNK) -> jax.Array:
    """One undamped application of eq. (14)–(15), ψ (K, d) → F(ψ) (K, d), the
    same values as :func:`vaefp_jax.fixed_point.step`, never holding more than
    (data_chunk, tile_chunk) logits at once.

    Args:
      psi: (K, d) decoder values on the tiles.
      x: (n, d) data.
      beta: scalar β > 0.
      log_prior: (K,) log prior masses, ``logsumexp(log_prior) == 0``.
      tile_chunk: tiles per block (clipped to K; need not divide K).
      data_chunk: data points per block (clipped to n; need not divide n).
    """
    _check(psi, x, beta, log_prior)
    F = StreamedMap(_check_chunk("tile_chunk", tile_chunk), _check_chunk("data_chunk", data_chunk))
    return _jit_map(F, *_cast(psi, x, beta, log_prior))


# --------------------------------------------------------------------------- solve


def solve_streamed(
    x,
    betas,
    grid: LatentGrid,
    *,
    tile_chunk: int = DEFAULT_TILE_CHUNK,
    data_chunk: int = DEFAULT_DATA_CHUNK,
    psi0=None,
    protocol: Protocol | None = None,
    damping: float | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    key=None,
    record_every: int = 0,
    batch_size: int | None = None,
    warn: bool = True,
) -> SolveResult:
    """:func:`vaefp_jax.solve` with the blocked map of :func:`step_streamed`.

    Same arguments, defaults and result as ``solve`` (x (n, d), betas (B,), psi0
    (K, d) or (B, K, d); returns a :class:`~vaefp_jax.solver.SolveResult` with
    ``psi`` (B, K, d)), plus ``tile_chunk`` and ``data_chunk``. Memory per β
    iterated together: O(data_chunk · tile_chunk + K · d) instead of O(n · K);
    ``batch_size`` β run together (default :func:`~vaefp_jax.solver.default_batch_size`).
    """
    F = StreamedMap(_check_chunk("tile_chunk", tile_chunk), _check_chunk("data_chunk", data_chunk))
    if batch_size is not None:
        _check_chunk("batch_size", batch_size)
    return solve(x, betas, grid, psi0=psi0, protocol=protocol, damping=damping, tol=tol, max_steps=max_steps,
                 key=key, record_every=record_every, batch_size=batch_size, step_map=F, warn=warn)
