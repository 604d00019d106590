r"""Eq. (14) and eq. (15) of the paper, written once: the reference every map is tested against.

Notation (σ = 1 throughout; a Gaussian decoder with a global σ is recovered by
β → β σ²):

* x    (n, d)  data points x_i;
* psi  (K, d)  ψ_a = g(z) on tile a (the decoder in the tile basis);
* log_prior (K,)  log π_a, the prior mass of tile a;
* beta  scalar β > 0.

Eq. (14): the encoder in the tile basis, q(z|x_i) = π(z) Σ_a m_ia φ_a(z), with

    m_ia = exp(ℓ_ia) / c_i,   ℓ_ia = −‖x_i − ψ_a‖² / 2β,   c_i = Σ_b π_b exp(ℓ_ib),

so that Σ_a m_ia π_a = 1; the tile posterior of x_i is q_ia = m_ia π_a. Eq. (15):
the optimal decoder for that encoder,

    ψ_b ← Σ_i x_i m_ib / Σ_j m_jb,

a convex combination of the data. Nothing may over- or underflow for β in
[1e-6, 1e6] in float32. The log-space form (:func:`evaluate_log_space`, the
reference) takes log c_i as a log-sum-exp over tiles and the weights
m_ib / Σ_j m_jb as a softmax over data points of log m_ib = ℓ_ib − log c_i: two
exponentials per (tile, point) pair. :func:`evaluate` needs one: shifting each
logit by a row maximum M_i and a column maximum r_b (no exponential) bounds every
exp(ℓ_bi − M_i − r_b) by 1 with a 1 in every row and column, and the column shift
cancels inside eq. (15) (:class:`TileWeights` has the derivation).

One evaluation of the map gives, besides F(ψ), the two normalisers every other
quantity needs (:class:`MapValue`): log c_i (the free energy
f(ψ) = −(β/n) Σ_i log c_i, minimised over the encoder) and log Σ_i m_ib (so the
aggregate posterior mass of tile b is s_b = π_b Σ_i m_ib). The pair (14)–(15) is
coordinate descent on the β-free energy, so the undamped map never increases f.

Layout: the logits are formed tiles-first, (K, n): the reduction over tiles
accumulates whole rows and the softmax and weighted mean of eq. (15) run over
contiguous rows (a plain (K, n) @ (n, d) product). Why it is faster on CPU is
measured in docs/scale.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from vaefp_jax import _validate
from vaefp_jax.precision import matmul

__all__ = [
    "MapValue",
    "squared_distances",
    "tile_logits",
    "encoder",
    "log_m",
    "tile_posterior",
    "evaluate",
    "evaluate_log_space",
    "evaluate_shifted",
    "shifted_sums",
    "shifted_in_range",
    "SHIFTED_RANGE",
    "TileWeights",
    "tile_weights",
    "step",
    "order_parameter",
    "free_energy",
    "UNROLL_MAX_D",
    "DIRECT_MAX_D",
    "working_dtype",
    "validated",
]

def validated(psi, x, beta, log_prior):
    """(ψ, x, β, log π) checked at the boundary and cast to one float dtype.

    The checks are Python-level: under ``jit`` they run once, at trace time, and
    value checks on tracers are skipped (see :mod:`vaefp_jax._validate`)."""
    _validate.check_data(x)
    _validate.check_psi(psi, x)
    _validate.check_beta(beta)
    _validate.check_log_prior(log_prior, num_tiles=np.shape(psi)[0])
    dtype = working_dtype(psi, x)
    return jnp.asarray(psi, dtype), jnp.asarray(x, dtype), jnp.asarray(beta, dtype), jnp.asarray(log_prior, dtype)


def _checked(fn):
    """``fn`` with its arguments :func:`validated`."""

    def wrapper(psi, x, beta, log_prior):
        return fn(*validated(psi, x, beta, log_prior))

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def working_dtype(*arrays):
    """The float dtype computations run in: that of the inputs, at least float32."""
    dtype = jnp.result_type(*arrays, jnp.float32)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


UNROLL_MAX_D = 8
DIRECT_MAX_D = 64


class MapValue(NamedTuple):
    """One evaluation of the map at ψ: ``psi`` F(ψ) (K, d); ``log_c`` log c_i (n,)
    of eq. (14); ``log_mass`` log Σ_i m_ib (K,), the denominator of eq. (15)."""

    psi: jax.Array
    log_c: jax.Array
    log_mass: jax.Array

    def free_energy(self, beta) -> jax.Array:
        """f(ψ) = −(β/n) Σ_i log c_i (the negative β-ELBO minimised over the encoder)."""
        return -beta * jnp.mean(self.log_c)

    def tile_mass(self, log_prior) -> jax.Array:
        """s̄_b = (1/n) Σ_i q_ib = π_b Σ_i m_ib / n, the aggregate posterior (K,)."""
        return jnp.exp(log_prior + self.log_mass) / self.log_c.shape[0]


def squared_distances(x: jax.Array, psi: jax.Array) -> jax.Array:
    """‖x_i − ψ_a‖², shape (n, K).

    From differences for d ≤ 64: full relative precision, which the logits
    −‖x − ψ‖²/2β need at small β. For d ≤ 8 the sum over coordinates is unrolled
    (XLA fuses it into one loop over (n, K)); for 8 < d ≤ 64 a broadcast-and-reduce.
    For larger d (images), the matrix-product form ‖x − μ‖² + ‖ψ − μ‖² − 2 (x − μ)·(ψ − μ),
    centred on the data mean μ to limit cancellation and clipped at 0, so that no
    (n, K, d) intermediate is formed; its absolute error is ~eps·‖x − μ‖² (use
    float64 at small β there).
    """
    d = x.shape[-1]
    if d <= UNROLL_MAX_D:
        out = None
        for k in range(d):
            diff = x[:, k][:, None] - psi[:, k][None, :]
            out = diff * diff if out is None else out + diff * diff
        assert out is not None   # d ≥ 1 (points and decoders have at least one coordinate)
        return out
    if d <= DIRECT_MAX_D:
        diff = x[:, None, :] - psi[None, :, :]
        return jnp.sum(diff * diff, axis=-1)
    mu = jnp.mean(x, axis=0)
    xc, pc = x - mu, psi - mu
    sq = jnp.sum(xc * xc, axis=1)[:, None] + jnp.sum(pc * pc, axis=1)[None, :] - matmul(2 * xc, pc.T)
    return jnp.maximum(sq, 0)


def tile_logits(psi, x, beta) -> jax.Array:
    """ℓ_bi = −‖x_i − ψ_b‖²/2β in the tiles-first layout, shape (K, n)."""
    if x.shape[-1] <= DIRECT_MAX_D:
        return -squared_distances(psi, x) / (2 * beta)
    return -squared_distances(x, psi).T / (2 * beta)


def encoder(psi, x, beta, log_prior) -> tuple[jax.Array, jax.Array]:
    """Eq. (14): (log m_bi (K, n), log c_i (n,)), tiles-first."""
    logits = tile_logits(psi, x, beta)
    log_c = logsumexp(logits + log_prior[:, None], axis=0)
    return logits - log_c[None, :], log_c


class TileWeights(NamedTuple):
    """The encoder of eq. (14) from one exponential per (tile, point) pair, tiles-first.

    With ℓ_bi the logits, shifts M_i = max_b (ℓ_bi + log π_b) (n,) and r_b = max_i (ℓ_bi − M_i)
    (K,), both maxima and no exponential:

    * ``E`` (K, n): E_bi = exp(ℓ_bi − M_i − r_b) ≤ 1, with an entry 1 in every row;
    * ``g`` (K,): g_b = exp(log π_b + r_b) ≤ 1;
    * ``c`` (n,): c̃_i = Σ_b g_b E_bi = c_i e^{−M_i}, in [1, K] (the tile of the maximum gives 1);
    * ``M`` (n,), ``r`` (K,): the shifts (constants to differentiation: the quantities
      below do not depend on them, so ``stop_gradient`` loses no derivative).

    Then exactly log c_i = M_i + log c̃_i, m_ib = e^{r_b} E_bi / c̃_i, the tile posterior
    q_ib = m_ib π_b = g_b E_bi / c̃_i, and the weights of eq. (15)
    w_bi = (E_bi / c̃_i) / Σ_j (E_bj / c̃_j), where e^{r_b} cancels inside a tile's row.
    No sum can under- or overflow: each row of E/c̃ has an entry ≥ 1/K, each c̃_i lies in
    [1, K]; a tile with π_b = 0 has g_b = 0 and a finite row. This is half the
    exponentials of the log-space form (:func:`evaluate_log_space`), which takes one for
    the log-sum-exp of log c_i and one for the softmax over the data."""

    E: jax.Array
    g: jax.Array
    c: jax.Array
    M: jax.Array
    r: jax.Array

    @property
    def inverse_c(self) -> jax.Array:
        return 1.0 / self.c

    @property
    def posterior(self) -> jax.Array:
        """q_bi (K, n), the tile posterior, transposed: each column sums to 1."""
        return self.g[:, None] * self.E * self.inverse_c[None, :]

    @property
    def weights(self) -> jax.Array:
        """w_bi (K, n), the weights of eq. (15): each tile's row sums to 1."""
        m = self.E * self.inverse_c[None, :]
        return m / jnp.sum(m, axis=1, keepdims=True)


def tile_weights(psi, x, beta, log_prior) -> TileWeights:
    """The :class:`TileWeights` of ψ (K, d), x (n, d): one exp per (tile, point) pair."""
    logits = tile_logits(psi, x, beta)                                          # (K, n)
    M = jax.lax.stop_gradient(jnp.max(logits + log_prior[:, None], axis=0))     # (n,)
    t = logits - M[None, :]
    r = jax.lax.stop_gradient(jnp.max(t, axis=1))                               # (K,)
    E = jnp.exp(t - r[:, None])
    g = jnp.exp(log_prior + r)
    return TileWeights(E=E, g=g, c=matmul(g, E), M=M, r=r)


@_checked
def evaluate(psi, x, beta, log_prior) -> MapValue:
    """Eq. (15) from eq. (14) with one exponential per pair (:class:`TileWeights`):

        F(ψ)_b = Σ_i E_bi (x_i / c̃_i) / Σ_i E_bi / c̃_i,

    both sums from one product of E with the (n, d + 1) array [x / c̃, 1 / c̃];
    log c_i = M_i + log c̃_i and log Σ_i m_ib = r_b + log Σ_i E_bi / c̃_i. Equal to
    :func:`evaluate_log_space` to rounding for every β (tests/test_equations.py)."""
    tw = tile_weights(psi, x, beta, log_prior)
    return _normalised(tw.E, tw.c, x, tw.M, tw.r)[0]


def _normalised(E, c, x, row_shift, column_shift) -> tuple[MapValue, jax.Array]:
    """(MapValue, T) from E_bi = exp(ℓ_bi − a_i − s_b) (K, n) and c̃_i = Σ_b π_b e^{s_b} E_bi (n,):
    both sums of eq. (15) from one product of E with [x / c̃, 1 / c̃]; T_b = Σ_i E_bi / c̃_i."""
    inv = 1.0 / c
    sums = matmul(E, jnp.concatenate([x * inv[:, None], inv[:, None]], axis=1))    # (K, d + 1)
    total = sums[:, -1]
    value = MapValue(psi=sums[:, :-1] / total[:, None], log_c=row_shift + jnp.log(c),
                     log_mass=column_shift + jnp.log(total))
    return value, total


SHIFTED_RANGE = 20   # evaluate_shifted accepts c̃_i and Σ_i E_bi / c̃_i in [2^-20, 2^20]


def evaluate_shifted(psi, x, beta, log_prior, row_shift, column_shift) -> tuple[MapValue, jax.Array]:
    """Eq. (14)–(15) in one pass over the pairs, with shifts given instead of computed:
    (MapValue, ok), ``ok`` a boolean scalar saying whether the value is to be trusted.

    The shifts cancel exactly whatever they are (:class:`TileWeights`): with a_i =
    ``row_shift`` (n,) and s_b = ``column_shift`` (K,), E_bi = exp(ℓ_bi − a_i − s_b),
    g_b = π_b e^{s_b}, c̃_i = Σ_b g_b E_bi = c_i e^{−a_i} and
    F(ψ)_b = Σ_i E_bi (x_i / c̃_i) / Σ_i E_bi / c̃_i, log c_i = a_i + log c̃_i,
    log Σ_i m_ib = s_b + log Σ_i E_bi / c̃_i. :func:`evaluate` takes the maxima M_i, r_b,
    which bound every E_bi by 1 but cost two passes over the (K, n) logits before the
    exponential; here there is one pass (the logits, E, then the two products).

    The intended shifts are the normalisers of the previous iterate's evaluation,
    a = log c_i(ψ^{t−1}) and s = log Σ_i m_ib(ψ^{t−1}) (the map's state in
    :meth:`vaefp_jax.maps.DenseMap.evaluate_warm`). Then c̃_i = c_i(ψ^t)/c_i(ψ^{t−1}) and
    T_b := Σ_i E_bi / c̃_i = Σ_i m_ib(ψ^t) / Σ_i m_ib(ψ^{t−1}): both 1 at a fixed point.
    ``ok`` requires every c̃_i and T_b in [2^−R, 2^R], R = ``SHIFTED_RANGE`` (false for
    NaN, ±inf, and for the +inf shifts of a first step). That suffices for the value to be
    as accurate as :func:`evaluate`'s: E_bi ≤ T_b c̃_i ≤ 2^{2R} cannot overflow; an entry
    E_bi or g_b E_bi lost to underflow (below the smallest normal number, 2^−126 in
    float32) is below 2^−126 · 2^{2R} against sums of at least 2^−R, a relative loss under
    (K + n) 2^{−126+3R} = (K + n) 2^−66, far below the rounding error; g_b ≤ n/π_b · π_b = n
    (m_ib ≤ 1/π_b) cannot overflow. When ``ok`` is false the value must be recomputed by
    :func:`evaluate`. The shifts are constants to differentiation (``stop_gradient``).

    Unchecked (traced) arguments: ψ (K, d), x (n, d), β (), log π (K,), shifts (n,), (K,)."""
    value, c, total = shifted_sums(psi, x, beta, log_prior, row_shift, column_shift)
    return value, shifted_in_range(c, total)


def shifted_sums(psi, x, beta, log_prior, row_shift, column_shift) -> tuple[MapValue, jax.Array, jax.Array]:
    """(MapValue, c̃ (n,), T (K,)) of :func:`evaluate_shifted`, before the range check: XLA's
    form, two products that each read E (:mod:`vaefp_jax.native.shifted` reads it once)."""
    row_shift = jax.lax.stop_gradient(row_shift)
    column_shift = jax.lax.stop_gradient(column_shift)
    E = jnp.exp(tile_logits(psi, x, beta) - row_shift[None, :] - column_shift[:, None])      # (K, n)
    c = matmul(jnp.exp(log_prior + column_shift), E)                                         # (n,)
    value, total = _normalised(E, c, x, row_shift, column_shift)
    return value, c, total


def shifted_in_range(c, total) -> jax.Array:
    """The range check of :func:`evaluate_shifted`: every c̃_i and T_b in [2^−R, 2^R]
    (false for NaN and ±inf), a boolean scalar."""
    lo, hi = 2.0 ** -SHIFTED_RANGE, 2.0 ** SHIFTED_RANGE
    return jnp.all((c >= lo) & (c <= hi)) & jnp.all((total >= lo) & (total <= hi))


@_checked
def evaluate_log_space(psi, x, beta, log_prior) -> MapValue:
    """Eq. (15) from eq. (14) in log space, two exponentials per (tile, point) pair:
    log c_i by a log-sum-exp over tiles, the weights by a softmax over the data of
    log m_ib = ℓ_ib − log c_i. The reference :func:`evaluate` is tested against."""
    log_m_t, log_c = encoder(psi, x, beta, log_prior)
    shift = jax.lax.stop_gradient(jnp.max(log_m_t, axis=1, keepdims=True))
    e = jnp.exp(log_m_t - shift)
    total = jnp.sum(e, axis=1, keepdims=True)
    return MapValue(psi=matmul(e, x) / total, log_c=log_c, log_mass=(jnp.log(total) + shift)[:, 0])


@_checked
def step(psi, x, beta, log_prior) -> jax.Array:
    """One undamped application of eq. (14)–(15): ψ (K, d) → F(ψ) (K, d)."""
    return evaluate(psi, x, beta, log_prior).psi


@_checked
def log_m(psi, x, beta, log_prior) -> jax.Array:
    """log m_ia of eq. (14), data-first, shape (n, K)."""
    return encoder(psi, x, beta, log_prior)[0].T


@_checked
def tile_posterior(psi, x, beta, log_prior) -> jax.Array:
    """q_ia = m_ia π_a, the posterior over tiles of each x_i; shape (n, K), rows sum to 1."""
    # a softmax over tiles, not exp(log m + log π): normalised to rounding even where the
    # logits are large (the error of log c_i cancels)
    return jax.nn.softmax(log_m(psi, x, beta, log_prior) + log_prior[None, :], axis=1)


@_checked
def order_parameter(psi, x, beta, log_prior) -> jax.Array:
    r"""The order parameter u = E_ρ(x) E_q(z|x) ‖x − g(z)‖² (Section 2.2), a scalar ≥ 0.

    With g(z) = Σ_a ψ_a φ_a(z) and disjoint tiles (φ_a φ_b = δ_ab φ_a),
    E_q(z|x_i) ‖x_i − g(z)‖² = Σ_a m_ia π_a ‖x_i − ψ_a‖², and averaging over the
    empirical data density, u = (1/n) Σ_i Σ_a q_ia ‖x_i − ψ_a‖² with q_ia the
    tile posterior of eq. (14) for this ψ.
    """
    sq = squared_distances(x, psi)                                   # (n, K)
    q = jax.nn.softmax(-sq / (2 * beta) + log_prior[None, :], axis=1)
    return jnp.mean(jnp.sum(q * sq, axis=1))


@_checked
def free_energy(psi, x, beta, log_prior) -> jax.Array:
    """f(ψ) = −(β/n) Σ_i log c_i(ψ): the negative β-ELBO (σ = 1, up to a constant)
    minimised over the encoder. Non-increasing along undamped iterations of eq. (15)."""
    return -beta * jnp.mean(encoder(psi, x, beta, log_prior)[1])
