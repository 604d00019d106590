"""Eq. (14)–(15) in one pass with given shifts, each exponential read once: the C++ form of
:func:`vaefp_jax.equations.evaluate_shifted` (``shifted_map.cc``).

XLA evaluates c̃_i = Σ_b g_b E_bi and the column sums Σ_i E_bi [x_i, 1] / c̃_i as two
products that each read the (K, n) array E; XLA:CPU cannot fuse a reduction into a second
one that depends on it. The kernel takes a block of four data points at a time, computes
their K values of E into a buffer that stays in L1, sums c̃ while producing them, and adds
the block's terms into the column sums before the next block: one exponential and one
read of E per pair. β values of a batch (and, with fewer β than threads, blocks of one β's
data points) run in parallel on XLA's intra-op thread pool.

Same contract as :func:`~vaefp_jax.equations.evaluate_shifted`: (MapValue, ok), with the
same range check on c̃ and T. The kernel's exp clamps its argument to [log 2^−126, 88]
in float32 ([−708.39, 709] in float64): an entry below the smallest normal number counts
as 0 or as that number (subnormals are flushed), within the loss the range check already
bounds (:func:`~vaefp_jax.equations.evaluate_shifted`); an entry above the top, or from a
NaN, counts as the top, and the range check rejects every such evaluation (T_b c̃_i ≥ E_bi
puts one of them above its bound), so the caller falls back to XLA's form.
Differentiable: a ``custom_jvp`` whose tangents are those of the XLA form (the primal is
the kernel's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vaefp_jax import equations
from vaefp_jax.native import build

__all__ = ["shifted_sums", "evaluate_shifted", "supports"]

MAX_D = equations.DIRECT_MAX_D   # beyond, the distances of a pair cost more than XLA's matrix-product form


def supports(dim: int, dtype) -> bool:
    """Whether the kernel takes this problem and is loaded: float32 or float64, d ≤ MAX_D, JAX's
    default backend the CPU (elsewhere nothing is compiled: the step maps lower XLA's form for
    other platforms anyway), and the kernels built and loaded by this process. Called while
    tracing, so it never builds: it reads the status already determined (:func:`build.peek`;
    ``DenseMap.check``, which ``prepare`` calls before tracing, determines it), and where
    nothing has determined it yet the answer is no (XLA's form, the same values to rounding)."""
    if not (jnp.dtype(dtype) in (jnp.float32, jnp.float64) and 1 <= dim <= MAX_D and jax.default_backend() == "cpu"):
        return False
    st = build.peek()
    return st is not None and st.available


def _kernel(psi, x, beta, log_prior, row_shift, column_shift):
    """(F (K, d), c̃ (n,), T (K,)) from the custom call: F_b = Σ_i (E_bi / c̃_i) x_i / T_b,
    c̃_i = Σ_b π_b e^{s_b} E_bi, T_b = Σ_i E_bi / c̃_i. Leading batch dimensions come from
    ``vmap`` (all inputs in ψ's dtype)."""
    build.library()
    K, d = psi.shape[-2:]
    n = x.shape[-2]
    dtype = psi.dtype
    x, beta, log_prior, row_shift, column_shift = (jnp.asarray(v, dtype) for v in (x, beta, log_prior, row_shift,
                                                                                   column_shift))
    target = {jnp.dtype(jnp.float32): "vaefp_shifted_sums_f32", jnp.dtype(jnp.float64): "vaefp_shifted_sums_f64"}[dtype]
    out = (jax.ShapeDtypeStruct((K, d), dtype), jax.ShapeDtypeStruct((n,), dtype), jax.ShapeDtypeStruct((K,), dtype))
    call = jax.ffi.ffi_call(target, out, vmap_method="expand_dims")
    return call(psi, x, beta, log_prior, row_shift, column_shift)


@jax.custom_jvp
def shifted_sums(psi, x, beta, log_prior, row_shift, column_shift):
    """(MapValue, c̃ (n,), T (K,)) as :func:`vaefp_jax.equations.shifted_sums`, from the kernel;
    its derivatives are those of XLA's form (a ``custom_jvp``)."""
    F, c, total = _kernel(psi, x, beta, log_prior, row_shift, column_shift)
    value = equations.MapValue(psi=F, log_c=row_shift + jnp.log(c), log_mass=column_shift + jnp.log(total))
    return value, c, total


@shifted_sums.defjvp
def _shifted_sums_jvp(primals, tangents):
    return shifted_sums(*primals), jax.jvp(equations.shifted_sums, primals, tangents)[1]


def evaluate_shifted(psi, x, beta, log_prior, row_shift, column_shift):
    """(MapValue, ok) as :func:`vaefp_jax.equations.evaluate_shifted`, from the kernel.
    Unchecked (traced) arguments: ψ (K, d), x (n, d), β (), log π (K,), shifts (n,), (K,)."""
    value, c, total = shifted_sums(psi, x, beta, log_prior, row_shift, column_shift)
    return value, equations.shifted_in_range(c, total)
