r"""The blocked map: eq. (14)–(15) without the full n × K matrix, for large problems.

:class:`~vaefp_jax.maps.DenseMap` forms the logits ℓ_ib = −‖x_i − ψ_b‖²/2β as
one (K, n) array; for n = 10⁴ points and a 128 × 128 grid that is 655 MB per β
in float32 (docs/scale.md). :class:`BlockedMap` computes the same
:class:`~vaefp_jax.equations.MapValue` from (data_chunk, tile_chunk) blocks, in
two passes:

1. **log c_i** = logsumexp_b(ℓ_ib + log π_b): for each block of data rows, a
   ``lax.scan`` over tile blocks keeps a running maximum and a running sum of
   exponentials (the online log-sum-exp), shape (n,);
2. **ψ_b** = Σ_i x_i m_ib / Σ_j m_jb with log m_ib = ℓ_ib − log c_i: for each block
   of tiles a ``lax.scan`` over data blocks keeps, per tile, a running maximum
   of log m_ib over i, the running sum of exp(log m_ib − max) (whose log is
   log Σ_i m_ib) and the running weighted sum of the x_i (an online softmax
   over i, as in flash attention), shape (tile_chunk, d).

Live memory per β: a few (data_chunk, tile_chunk) blocks plus (tile_chunk, d)
accumulators. The price is computing every distance twice. Distances use the
formulas of :func:`~vaefp_jax.equations.squared_distances` (differences for
d ≤ 64, the matrix-product form centred on the *full* data mean for d > 64), so
the result equals the dense map's up to floating-point reassociation.

The running maxima are shifts only: the results do not depend on them (log Σ e^v =
m + log Σ e^{v − m} for any m), so they carry no derivative (``stop_gradient``). Besides
saving work, this keeps the derivatives finite: the derivative of a maximum is spread over
the entries equal to it, and where XLA computes a block's logits in two fusions that round
differently, no entry equals the maximum and the derivative would be 0/0.

Chunks need not divide n or K: the tiles are padded with log π = −∞ (they add
nothing to c_i; their columns are computed and dropped) and the data with
log c = +∞ (so log m = −∞: they add nothing to any column).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax import _validate, operators
from vaefp_jax.equations import DIRECT_MAX_D, MapValue, squared_distances
from vaefp_jax.maps.base import StepMap
from vaefp_jax.precision import matmul

__all__ = ["BlockedMap", "DEFAULT_TILE_CHUNK", "DEFAULT_DATA_CHUNK"]

# 1024 × 1024 blocks (4 MB of float32 logits); the choice is measured in docs/scale.md.
DEFAULT_TILE_CHUNK = 1024
DEFAULT_DATA_CHUNK = 1024


def _check_chunk(name: str, value) -> int:
    return _validate.check_int(name, value)


# --------------------------------------------------------------------------- blocks


def _distance_coordinates(x, psi):
    """x (n, d), ψ (K, d) in the coordinates the distances are computed in: as
    given for d ≤ 64, centred on the data mean for d > 64 (as ``squared_distances``)."""
    if x.shape[-1] <= DIRECT_MAX_D:
        return x, psi
    mu = jnp.mean(x, axis=0)
    return x - mu, psi - mu


def _block_squared_distances(xb, pb):
    """‖x_i − ψ_b‖² for a block, (nc, kc), from rows already in distance coordinates."""
    if xb.shape[-1] <= DIRECT_MAX_D:
        return squared_distances(xb, pb)
    sq = jnp.sum(xb * xb, axis=1)[:, None] + jnp.sum(pb * pb, axis=1)[None, :] - matmul(2 * xb, pb.T)
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
            new_max = jnp.maximum(run_max, jax.lax.stop_gradient(jnp.max(v, axis=1)))
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
            new_max = jnp.maximum(run_max, jax.lax.stop_gradient(jnp.max(lm, axis=0)))
            shift = _safe_max(new_max)
            rescale = jnp.exp(run_max - shift)
            w = jnp.exp(lm - shift[None, :])
            run_sum = run_sum * rescale + jnp.sum(w, axis=0)
            run_acc = run_acc * rescale[:, None] + matmul(w.T, xb)
            return (new_max, run_sum, run_acc), None

        kc, d = pb.shape[0], x_blocks.shape[-1]
        dtype = x_blocks.dtype
        init = (jnp.full((kc,), -jnp.inf, dtype), jnp.zeros((kc,), dtype), jnp.zeros((kc, d), dtype))
        (run_max, run_sum, run_acc), _ = jax.lax.scan(add_rows, init, (xd_blocks, x_blocks, log_c_blocks))
        return run_acc / run_sum[:, None], run_max + jnp.log(run_sum)

    out, log_mass = jax.lax.map(one_tile_block, pd_blocks)
    return out.reshape((-1, out.shape[-1])), log_mass.reshape(-1)


def _order_parameter_pass(xd_blocks, pd_blocks, lp_blocks, log_c_blocks, beta):
    """Σ_i Σ_b q_ib ‖x_i − ψ_b‖², q_ib = exp(ℓ_ib + log π_b − log c_i), block by block."""

    def one_data_block(rows):
        xb, lcb = rows

        def add_tiles(acc, tiles):
            pb, lpb = tiles
            sq = _block_squared_distances(xb, pb)
            q = jnp.exp(-sq / (2 * beta) + lpb[None, :] - lcb[:, None])
            return acc + jnp.sum(jnp.where(q > 0, q * sq, 0.0)), None

        total, _ = jax.lax.scan(add_tiles, jnp.zeros((), xb.dtype), (pd_blocks, lp_blocks))
        return total

    return jnp.sum(jax.lax.map(one_data_block, (xd_blocks, log_c_blocks)))


def _block_dv(xb, pb, vb):
    """(x_i − ψ_b)·v_b for a block, (nc, kc), rows in distance coordinates: from differences for
    d ≤ 64 (full relative precision where x_i is near ψ_b, like the dense map's product), from
    products for larger d."""
    if xb.shape[-1] <= DIRECT_MAX_D:
        return jnp.sum((xb[:, None, :] - pb[None, :, :]) * vb[None, :, :], axis=-1)
    return matmul(xb, vb.T) - jnp.sum(pb * vb, axis=1)[None, :]


def _jacobian_product(xd_blocks, x_blocks, pd_blocks, lp_blocks, log_c_blocks, lm_blocks, new_blocks, v_blocks,
                      beta):
    r"""J v block by block (the closed form of :mod:`vaefp_jax.tile_jacobian`),

        (J v)_b = Σ_j w_jb (x_j − ψ'_b) s_bj,   s_bj = ((x_j − ψ_b)·v_b − t_j)/β,
        t_j = Σ_a q_ja (x_j − ψ_a)·v_a,

    with q_ja = exp(ℓ_ja + log π_a − log c_j) and w_jb = exp(ℓ_jb − log c_j − log Σ_i m_ib) both
    ≤ 1 (no running maximum), from the normalisers of one evaluation. Two passes like the map's:
    t over tile blocks for each data block, then the sums over data blocks for each tile block.
    ``x_blocks`` and ``new_blocks`` (ψ') are centred on the data mean. Padding: log c = +∞ on
    padded rows, log π = −∞ and log Σ m = +∞ on padded tiles (zero weights)."""

    def t_of_rows(rows):
        xdb, lcb = rows

        def add(acc, tiles):
            pb, lpb, vb = tiles
            q = jnp.exp(-_block_squared_distances(xdb, pb) / (2 * beta) + lpb[None, :] - lcb[:, None])
            return acc + jnp.sum(q * _block_dv(xdb, pb, vb), axis=1), None

        t, _ = jax.lax.scan(add, jnp.zeros(xdb.shape[:1], xdb.dtype), (pd_blocks, lp_blocks, v_blocks))
        return t

    t_blocks = jax.lax.map(t_of_rows, (xd_blocks, log_c_blocks))               # (Nd, nc)

    def out_of_tiles(tiles):
        pb, lmb, newb, vb = tiles

        def add(carry, rows):
            acc, total = carry
            xdb, xb, lcb, tb = rows
            w = jnp.exp(-_block_squared_distances(xdb, pb) / (2 * beta) - lcb[:, None] - lmb[None, :])
            ws = w * (_block_dv(xdb, pb, vb) - tb[:, None]) / beta          # (nc, kc)
            return (acc + matmul(ws.T, xb), total + jnp.sum(ws, axis=0)), None

        init = (jnp.zeros(pb.shape[:1] + x_blocks.shape[-1:], x_blocks.dtype), jnp.zeros(pb.shape[:1], pb.dtype))
        (acc, total), _ = jax.lax.scan(add, init, (xd_blocks, x_blocks, log_c_blocks, t_blocks))
        return acc - newb * total[:, None]

    out = jax.lax.map(out_of_tiles, (pd_blocks, lm_blocks, new_blocks, v_blocks))
    return out.reshape((-1, out.shape[-1]))


def _blocked_parts(psi, x, beta, log_prior, tile_chunk: int, data_chunk: int):
    (K, _), (n, _) = psi.shape, x.shape
    kc, nc = min(tile_chunk, K), min(data_chunk, n)
    xd, pd = _distance_coordinates(x, psi)
    xd_blocks = _blocks(xd, nc, 0)
    pd_blocks = _blocks(pd, kc, 0)
    lp_blocks = _blocks(log_prior, kc, -jnp.inf)
    log_c = _log_c(xd_blocks, pd_blocks, lp_blocks, beta)[:n]
    return xd_blocks, pd_blocks, lp_blocks, log_c, _blocks(log_c, nc, jnp.inf), nc


@dataclasses.dataclass(frozen=True)
class BlockedMap(StepMap):
    """The map of eq. (14)–(15) computed in (data_chunk, tile_chunk) blocks (see the
    module docstring); chunks are clipped to n and K and need not divide them."""

    tile_chunk: int = DEFAULT_TILE_CHUNK
    data_chunk: int = DEFAULT_DATA_CHUNK

    def __post_init__(self):
        _check_chunk("tile_chunk", self.tile_chunk)
        _check_chunk("data_chunk", self.data_chunk)

    def evaluate(self, psi, x, beta, log_prior) -> MapValue:
        """The map value at ψ (K, d), evaluated under a ``vmap`` of one ψ: XLA:CPU compiles
        pass 2 about twice as fast with that unit batch axis as without it (measured in
        docs/scale.md), and the one-β-at-a-time schedule maps without ``vmap``."""
        value = jax.vmap(lambda p: self._evaluate(p, x, beta, log_prior))(psi[None])
        return jax.tree.map(lambda a: a[0], value)

    def _evaluate(self, psi, x, beta, log_prior) -> MapValue:
        K = psi.shape[0]
        xd_blocks, pd_blocks, _, log_c, log_c_blocks, nc = _blocked_parts(
            psi, x, beta, log_prior, self.tile_chunk, self.data_chunk)
        new, log_mass = _weighted_means(xd_blocks, _blocks(x, nc, 0), log_c_blocks, pd_blocks, beta)
        return MapValue(psi=new[:K], log_c=log_c, log_mass=log_mass[:K])

    def jacobian(self, psi, x, beta, log_prior):
        """∂F/∂ψ at ψ, matrix-free and blocked (:func:`_jacobian_product`): one evaluation gives
        the normalisers, then each product costs about one evaluation (two passes over the
        blocks, no exponential that can overflow) and holds no (K, n) array; Jᵀ v by transposing
        that linear product."""
        K = psi.shape[0]
        xd_blocks, pd_blocks, lp_blocks, _, log_c_blocks, nc = _blocked_parts(
            psi, x, beta, log_prior, self.tile_chunk, self.data_chunk)
        new, log_mass = _weighted_means(xd_blocks, _blocks(x, nc, 0), log_c_blocks, pd_blocks, beta)  # F(ψ), one pass
        new, log_mass = new[:K], log_mass[:K]
        kc = pd_blocks.shape[1]
        lm_blocks = _blocks(log_mass, kc, jnp.inf)
        mu = jnp.mean(x, axis=0)   # Σ_j ws_jb (x_j − ψ'_b) from data centred on its mean (the dense product's rule)
        new_blocks = _blocks(new - mu, kc, 0)
        x_blocks = _blocks(x - mu, nc, 0)
        product = lambda v: _jacobian_product(xd_blocks, x_blocks, pd_blocks, lp_blocks, log_c_blocks, lm_blocks,
                                              new_blocks, _blocks(v, kc, 0), beta)[:K]
        return operators.MatrixFreeJacobian(product, psi, jnp.exp(log_prior + log_mass))

    def order_parameter(self, psi, x, beta, log_prior):
        xd_blocks, pd_blocks, lp_blocks, _, log_c_blocks, _ = _blocked_parts(
            psi, x, beta, log_prior, self.tile_chunk, self.data_chunk)
        return _order_parameter_pass(xd_blocks, pd_blocks, lp_blocks, log_c_blocks, beta) / x.shape[0]

    def lane_shape(self, num_points: int, num_tiles: int) -> tuple[int, int]:
        """The largest block of logits one β holds at once."""
        return min(self.data_chunk, num_points), min(self.tile_chunk, num_tiles)

    def __repr__(self):
        return f"BlockedMap(tile_chunk={self.tile_chunk}, data_chunk={self.data_chunk})"
