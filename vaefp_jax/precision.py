r"""The precision of matrix products: every product of the package runs at ``HIGHEST``.

The policy
----------
Every matrix product (``dot_general``) that the package traces runs at
``jax.lax.Precision.HIGHEST``: :data:`MATMUL_PRECISION`, passed by the thin wrappers
below (:func:`matmul`, :func:`einsum`, :func:`tensordot`, :func:`vdot`),
which the modules call instead of ``@``, ``jnp.dot``, ``jnp.einsum``, … . TF32 is not
used anywhere: there is no per-product exception.

Why
---
On NVIDIA GPUs since Ampere, JAX runs float32 products at its ``DEFAULT`` precision,
which is TF32 (10-bit mantissa inputs, a relative error of about 1e-3 per product), not
float32. ``HIGHEST`` makes them full float32. On CPU, and for float64 everywhere, the
precision makes no difference (XLA:CPU ignores it): solve, sweep and the Lipschitz
solves give the same results bit for bit with and without the policy, in float32 and
float64 (d = 100, measured when the policy was introduced).

The products that need it, and why a 1e-3 error is not acceptable in them:

* the squared distances for d > 64 (:func:`vaefp_jax.equations.squared_distances`, the
  blocked map's blocks): ‖x − ψ‖² = ‖x‖² − 2 x·ψ + ‖ψ‖² by a matrix product (x and ψ
  centred on the data mean). Near a fixed point ‖x − ψ‖² ≪ ‖x‖², so the cross term
  cancels catastrophically: a relative error of 1e-3 in x·ψ is an absolute error of
  ~1e-3 ‖x‖² in the distance, i.e. in the logits −‖x − ψ‖²/2β an error of
  ~1e-3 ‖x‖²/β, which at small β is larger than the logits' differences that decide
  the encoder;
* the column sums of eq. (15), E @ [x / c̃, 1 / c̃], and c̃ = g @ E: ψ is a ratio of
  two such sums and a fixed point is resolved to the iteration's tolerance (down to
  1e-6 relative and below with ``Damped.tight`` and ``Accelerated``), which TF32 could
  not reach (the residual would stall near 1e-3);
* the Jacobian products (:mod:`vaefp_jax.tile_jacobian`, :mod:`vaefp_jax.operators`: J v, the Woodbury factors,
  the reorthogonalisation of Lanczos) and the implicit derivatives u′, u″ built on
  them (:mod:`vaefp_jax.implicit`, :mod:`vaefp_jax.phase`): a derivative of a
  fixed point solves (I − J) v = r, whose error is that of J amplified by
  1/(1 − ρ), which diverges at the phase transitions the package looks for;
* the Lipschitz geometry (:mod:`vaefp_jax.constraints`: Lap(W) ψ, the barrier's
  gradient), the initial ψ (the data's covariance), the pre-image iteration of
  Proposition 4;
* the tiling metrics of a VAE (:mod:`vaefp_jax.vae.tiling`): they compare log q(z|x_i)
  across exemplars (an argmax, log-sum-exps); :func:`~vaefp_jax.vae.tiling.tiling_metrics`
  evaluates the encoder it is given under :func:`highest_default`, so that the
  network's products inside log q run at ``HIGHEST`` too.

Not covered, on purpose: the ``flax.nnx.Linear`` layers of the VAE network
(:mod:`vaefp_jax.vae.nets`, :mod:`vaefp_jax.vae.flow`) keep JAX's default precision
while *training* (training a network in TF32 is standard and its loss is a stochastic
estimate anyway); only their evaluation inside the tiling metrics is at ``HIGHEST``.
NumPy products on host arrays (:mod:`vaefp_jax.phase.tree`, :mod:`vaefp_jax.phase.scales`,
:mod:`vaefp_jax.datasets`, Prop. 3 in :mod:`vaefp_jax.propositions`) are float64 on the
CPU and not JAX. The Pallas kernels (:mod:`vaefp_jax.maps.pallas`) contain no product
(their d ≤ 8 coordinates are unrolled), and the C++ kernel (:mod:`vaefp_jax.native`)
computes in the working precision. JAX's own solvers that the package calls
(``jnp.linalg.solve``'s matvec, ``jax.scipy.sparse.linalg.gmres``) already use ``HIGHEST``.

Owed to a GPU session: whether some product could use TF32 (or ``HIGH``, 3-pass bf16)
at an acceptable error for its speed, measured: the error and time of the dense map at
d = 784 in float32 with ``DEFAULT`` against ``HIGHEST`` on an H100 (docs/precision.md).
Until then, no exception. For such a measurement, set :data:`MATMUL_PRECISION` here
before anything is traced (the wrappers read it at each call);
``jax.default_matmul_precision`` does not override an explicit precision.
``tests/test_precision.py`` checks the policy without a GPU: it records the precision
of every ``dot_general`` traced by the public entry points, walks their jaxprs and reads
the program lowered for CUDA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["MATMUL_PRECISION", "matmul", "einsum", "tensordot", "vdot", "highest_default"]

MATMUL_PRECISION = jax.lax.Precision.HIGHEST
"""The precision of every matrix product of the package (see the module docstring)."""


def matmul(a, b) -> jax.Array:
    """``a @ b`` (``jnp.matmul``) at :data:`MATMUL_PRECISION`."""
    return jnp.matmul(a, b, precision=MATMUL_PRECISION)


def einsum(subscripts: str, *operands) -> jax.Array:
    """``jnp.einsum(subscripts, *operands)`` at :data:`MATMUL_PRECISION`."""
    return jnp.einsum(subscripts, *operands, precision=MATMUL_PRECISION)


def tensordot(a, b, axes=2) -> jax.Array:
    """``jnp.tensordot(a, b, axes)`` at :data:`MATMUL_PRECISION`."""
    return jnp.tensordot(a, b, axes=axes, precision=MATMUL_PRECISION)


def vdot(a, b) -> jax.Array:
    """``jnp.vdot(a, b)`` (flattened, ``a`` conjugated) at :data:`MATMUL_PRECISION`."""
    return jnp.vdot(a, b, precision=MATMUL_PRECISION)


def highest_default():
    """A context in which products that name no precision (``a @ b`` in code the package
    does not own, e.g. a user's encoder or ``flax.nnx.Linear``) run at ``HIGHEST``:
    ``jax.default_matmul_precision("highest")``. It is part of JAX's trace context, so
    functions jitted outside it are traced again inside it."""
    return jax.default_matmul_precision("highest")
