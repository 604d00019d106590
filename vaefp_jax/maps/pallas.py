r"""The Pallas map: eq. (14)–(15) as two fused Pallas kernels (GPU), for d ≤ 8.

XLA evaluates the dense map as a handful of fusions, each
re-reading or re-computing (n, K) logits from memory. The floor of the map
(``benchmarks/floor.py``, ``docs/scale.md``) is set by its 2 n K exponentials
and by reading x (n, d) and ψ (K, d) once; these kernels compute the
distances on the fly and never write an (n, K) array:

1. **row kernel**, one program per block of ``data_block`` points: an online
   log-sum-exp over blocks of ``tile_block`` tiles,

       log c_i = logsumexp_b(−‖x_i − ψ_b‖²/2β + log π_b),       shape (n,);

2. **column kernel**, one program per block of tiles: an online softmax over
   blocks of data points (as in flash attention),

       ψ_b ← Σ_i x_i exp(ℓ_ib − log c_i − M_b) / Σ_i exp(ℓ_ib − log c_i − M_b),
       M_b = max_i (ℓ_ib − log c_i),                            shape (K, d).

The same formulas as :mod:`vaefp_jax.equations` in the same log-space form (no
β under- or overflows), up to floating-point reassociation of the sums. The
column kernel also writes log Σ_i m_ib = M_b + log Σ_i exp(ℓ_ib − log c_i − M_b)
(one more row of its output), so the kernels return the whole
:class:`~vaefp_jax.equations.MapValue`. :class:`~vaefp_jax.maps.BlockedMap` is
the XLA version of the same two passes; the kernels are tested against
:mod:`vaefp_jax.equations` in Pallas's interpret mode on CPU (tests/test_pallas_map.py).

Derivatives: a ``pallas_call`` has no JVP rule, so :class:`PallasMap` is a
``jax.custom_jvp`` whose tangent is that of the blocked map with the same
blocks (the same function, so the same derivative; no (n, K) array either),
and the order parameter is the blocked map's. Implicit derivatives through a
Pallas forward solve therefore work to any order.

Layout: coordinates are passed transposed, x as (d, n) and ψ as (d, K), so
that every load is a contiguous row and the sum over the d ≤ 8 coordinates is
unrolled (no matrix unit is needed for d = 2). Padding: n and K are padded to
multiples of the blocks; padded tiles get log π = ``_NEG`` (they add nothing to
c_i; their columns are dropped), padded points get log c = −``_NEG`` (their
log m is ≈ ``_NEG``, so they add nothing to any column). ``_NEG`` is a large
finite number rather than −∞ so that no ∞ − ∞ arises in the running maxima.

Backends: on GPU the kernels are lowered with Pallas's Triton backend
(``jax.experimental.pallas.triton.CompilerParams``); on CPU Pallas has only
its interpreter, which is correct but slow: there, use it to test, and use
``step``/``solve`` to compute. Under ``vmap`` (the β batch of
:func:`vaefp_jax.solve`) Pallas adds a grid axis: one launch per pass for all β.
The Triton backend needs jax ≥ 0.7 here; JAX's Pallas changelog marks it
deprecated from JAX 0.11 in favour of Mosaic GPU (Hopper and newer), so a
Mosaic GPU port of these two kernels is the path once a GPU can test it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from vaefp_jax.equations import UNROLL_MAX_D, MapValue
from vaefp_jax.maps.base import StepMap
from vaefp_jax.maps.blocked import BlockedMap

__all__ = ["PallasMap", "MAX_DIM"]

MAX_DIM = UNROLL_MAX_D  # coordinates are unrolled in the kernels
_NEG = -1e30  # "minus infinity" for padding: finite in float32 and float64


def _power_of_two(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1 or int(value) & (int(value) - 1):
        raise ValueError(f"{name} must be a positive power of two (a Triton block size), got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- kernels


def _squared_distances_block(rows, cols):
    """Σ_k (rows[k][:, None] − cols[k][None, :])², rows: d × (nb,), cols: d × (kb,) → (nb, kb)."""
    sq = None
    for r, c in zip(rows, cols):
        diff = r[:, None] - c[None, :]
        sq = diff * diff if sq is None else sq + diff * diff
    return sq


def _row_kernel(x_ref, psi_ref, lp_ref, two_beta_ref, log_c_ref, *, d, tile_block, num_tile_blocks):
    """x_ref (d, nb), psi_ref (d, Kp), lp_ref (Kp,), two_beta_ref (1,) → log_c_ref (nb,)."""
    scale = -1 / two_beta_ref[0]  # one division per program; per element a multiply (a GPU divide costs ~an exp)
    rows = [x_ref[k, :] for k in range(d)]
    nb = rows[0].shape[0]

    def body(j, carry):
        run_max, run_sum = carry
        cols_sl = pl.ds(j * tile_block, tile_block)
        sq = _squared_distances_block(rows, [psi_ref[k, cols_sl] for k in range(d)])
        v = sq * scale + lp_ref[cols_sl][None, :]  # ℓ_ib + log π_b, (nb, kb)
        new_max = jnp.maximum(run_max, jnp.max(v, axis=1))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(v - new_max[:, None]), axis=1)
        return new_max, run_sum

    init = (jnp.full((nb,), _NEG, rows[0].dtype), jnp.zeros((nb,), rows[0].dtype))
    run_max, run_sum = jax.lax.fori_loop(0, num_tile_blocks, body, init)
    log_c_ref[...] = run_max + jnp.log(run_sum)


def _column_kernel(psi_ref, x_ref, log_c_ref, two_beta_ref, out_ref, *, d, data_block, num_data_blocks):
    """psi_ref (d, kb), x_ref (d, Np), log_c_ref (Np,), two_beta_ref (1,) → out_ref (d + 1, kb):
    rows 0..d−1 the new ψ, row d log Σ_i m_ib."""
    scale = -1 / two_beta_ref[0]
    cols = [psi_ref[k, :] for k in range(d)]
    kb = cols[0].shape[0]
    dtype = cols[0].dtype

    def body(j, carry):
        run_max, run_sum, run_acc = carry
        rows_sl = pl.ds(j * data_block, data_block)
        rows = [x_ref[k, rows_sl] for k in range(d)]
        lm = _squared_distances_block(rows, cols) * scale - log_c_ref[rows_sl][:, None]  # log m, (nb, kb)
        new_max = jnp.maximum(run_max, jnp.max(lm, axis=0))
        rescale = jnp.exp(run_max - new_max)
        w = jnp.exp(lm - new_max[None, :])
        run_sum = run_sum * rescale + jnp.sum(w, axis=0)
        run_acc = tuple(a * rescale + jnp.sum(w * r[:, None], axis=0) for a, r in zip(run_acc, rows))
        return new_max, run_sum, run_acc

    init = (jnp.full((kb,), _NEG, dtype), jnp.zeros((kb,), dtype), tuple(jnp.zeros((kb,), dtype) for _ in range(d)))
    run_max, run_sum, run_acc = jax.lax.fori_loop(0, num_data_blocks, body, init)
    for k in range(d):
        out_ref[k, :] = run_acc[k] / run_sum
    out_ref[d, :] = run_max + jnp.log(run_sum)


# --------------------------------------------------------------------------- the map


def _compiler_params(num_warps: int):
    try:
        from jax.experimental.pallas.triton import CompilerParams  # jax ≥ 0.7
    except ImportError as e:
        raise ImportError("PallasMap on GPU needs jax ≥ 0.7 (jax.experimental.pallas.triton.CompilerParams); "
                          "upgrade jax or use the default map") from e
    return CompilerParams(num_warps=num_warps, num_stages=1)


def _pad(a, axis: int, size: int, fill):
    pad = size - a.shape[axis]
    if not pad:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    return jnp.pad(a, widths, constant_values=fill)


def _pallas_value(psi, x, beta, log_prior, data_block: int, tile_block: int, num_warps: int, interpret: bool):
    """MapValue for cast, validated inputs (traceable, vmappable over β and ψ)."""
    (K, d), (n, _) = psi.shape, x.shape
    dtype = x.dtype
    nb, kb = min(data_block, pl.next_power_of_2(n)), min(tile_block, pl.next_power_of_2(K))
    n_pad, K_pad = pl.cdiv(n, nb) * nb, pl.cdiv(K, kb) * kb
    xt = _pad(x.T, 1, n_pad, 0)                                # (d, Np)
    pt = _pad(psi.T, 1, K_pad, 0)                              # (d, Kp)
    lp = _pad(log_prior.astype(dtype), 0, K_pad, _NEG)         # (Kp,)
    two_beta = jnp.reshape(2 * beta, (1,)).astype(dtype)
    params = {} if interpret else dict(compiler_params=_compiler_params(num_warps))
    full = lambda shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))

    log_c = pl.pallas_call(
        functools.partial(_row_kernel, d=d, tile_block=kb, num_tile_blocks=K_pad // kb),
        out_shape=jax.ShapeDtypeStruct((n_pad,), dtype),
        grid=(n_pad // nb,),
        in_specs=[pl.BlockSpec((d, nb), lambda i: (0, i)), full((d, K_pad)), full((K_pad,)), full((1,))],
        out_specs=pl.BlockSpec((nb,), lambda i: (i,)),
        interpret=interpret,
        name="vaefp_row_logsumexp",
        **params,
    )(xt, pt, lp, two_beta)
    log_c = jnp.where(jnp.arange(n_pad) < n, log_c, -_NEG)    # padded points: log m ≈ _NEG

    new_t = pl.pallas_call(
        functools.partial(_column_kernel, d=d, data_block=nb, num_data_blocks=n_pad // nb),
        out_shape=jax.ShapeDtypeStruct((d + 1, K_pad), dtype),
        grid=(K_pad // kb,),
        in_specs=[pl.BlockSpec((d, kb), lambda j: (0, j)), full((d, n_pad)), full((n_pad,)), full((1,))],
        out_specs=pl.BlockSpec((d + 1, kb), lambda j: (0, j)),
        interpret=interpret,
        name="vaefp_column_softmax",
        **params,
    )(pt, xt, log_c, two_beta)
    return MapValue(psi=new_t[:d, :K].T, log_c=log_c[:n], log_mass=new_t[d, :K])


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _value(psi, x, beta, log_prior, config):
    return _pallas_value(psi, x, beta, log_prior, *config)


@_value.defjvp
def _value_jvp(config, primals, tangents):
    # the same function as the blocked map with these blocks: its tangent
    blocked = BlockedMap(tile_chunk=config[1], data_chunk=config[0])
    _, tangent = jax.jvp(blocked.evaluate, primals, tangents)
    return _value(*primals, config), tangent


@dataclasses.dataclass(frozen=True)
class PallasMap(StepMap):
    """The map of eq. (14)–(15) as two fused Pallas kernels (see the module docstring).

    Attributes:
      data_block: data points per block (a power of two; clipped to n's).
      tile_block: tiles per block (a power of two; clipped to K's).
      num_warps: Triton warps per program (GPU only).
      interpret: run Pallas's interpreter; ``None`` (default): on CPU only,
        where there is no compiled Pallas.
    """

    data_block: int = 64
    tile_block: int = 128
    num_warps: int = 4
    interpret: bool | None = None

    def __post_init__(self):
        _power_of_two("data_block", self.data_block)
        _power_of_two("tile_block", self.tile_block)
        _power_of_two("num_warps", self.num_warps)

    def check(self, num_points: int, num_tiles: int, dim: int) -> None:
        if dim > MAX_DIM:
            raise ValueError(f"PallasMap unrolls the coordinates: d ≤ {MAX_DIM}, got d = {dim}; "
                             "use DenseMap or BlockedMap")

    def evaluate(self, psi, x, beta, log_prior) -> MapValue:
        self.check(x.shape[0], psi.shape[0], x.shape[-1])
        interpret = jax.default_backend() == "cpu" if self.interpret is None else bool(self.interpret)
        return _value(psi, x, beta, log_prior, (self.data_block, self.tile_block, self.num_warps, interpret))

    def order_parameter(self, psi, x, beta, log_prior):
        return BlockedMap(tile_chunk=self.tile_block, data_chunk=self.data_block).order_parameter(
            psi, x, beta, log_prior)

    def lane_shape(self, num_points: int, num_tiles: int) -> tuple[int, int]:
        """The logits one program holds at once: no (n, K) array is formed."""
        return min(self.data_block, num_points), min(self.tile_block, num_tiles)
