r"""Dense linear algebra that cannot hang XLA:CPU: the one place where the package
calls LAPACK.

Why this module exists
----------------------
On CPU, jaxlib's LAPACK kernels (``lapack_*_ffi``: the LU, triangular solves,
Cholesky and eigensolvers behind ``jnp.linalg``) split a *batched* call of
enough work (≳ 2·10⁵ flops) into chunks, schedule the chunks on XLA:CPU's
intra-op thread pool and block until they are done (``ParallelBatchMap`` with a
``BlockingCounter``). The calling thread is itself often a worker of that pool
(the thunk executor runs a custom call on whichever worker finished the
operation before it). When every worker of the pool is blocked in such a wait,
nobody is left to run the chunks and the program waits forever, at 0 % CPU.
On a 2-core machine the pool has two workers, so two concurrent batched LAPACK
calls are enough. An *unbatched* call (batch 1) never reaches the pool: its one
chunk runs inline. ``docs/xla_cpu_hang.md`` has the stack trace and
``scripts/repro_lapack_hang.py`` a standalone reproducer.

The rule enforced here: on CPU, no LAPACK call ever sees a batch dimension,
whatever the caller does.

* Systems of size m ≤ :data:`SMALL` are solved by Gaussian elimination written
  in element-wise XLA (unrolled over the m columns, vectorised over the batch):
  no custom call at all, and faster than LAPACK for tiny systems.
* Larger systems go to LAPACK one at a time: leading batch dimensions are
  looped over with ``lax.map``, and the unbatched call is wrapped in
  ``jax.custom_batching.sequential_vmap``, so that a ``jax.vmap`` applied *by a
  caller* (over β, say) also becomes a loop instead of a batched call. The
  switch is made per platform at lowering time (``lax.platform_dependent``):
  on GPU and TPU the batched kernels are used as they are.
* :func:`solve` and :func:`solve_spd` are differentiable to any order in both
  arguments: they are ``lax.custom_linear_solve`` s whose forward and transposed
  solves are the calls above, so JAX never differentiates into LAPACK.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp

from vaefp_jax.precision import matmul

__all__ = ["SMALL", "solve", "solve_spd", "eigh", "small_solve"]

SMALL = 8
"""Systems up to this size are solved by :func:`small_solve` (pure XLA)."""


def small_solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """X with a[k] X[k] = b[k] for a (B, m, m), b (B, m, r), m small.

    Gaussian elimination with partial pivoting, unrolled over the m columns and
    vectorised over the batch: element-wise XLA only. The elimination runs on
    ``a`` and the row exchanges and updates are replayed on ``b``, so the result
    is visibly linear in b (JAX can transpose it: reverse mode works).
    """
    m = a.shape[-1]
    rows = jnp.arange(m)

    def swap(A, k, p, is_p):
        row_k, row_p = A[:, k], jnp.take_along_axis(A, p[:, None, None], axis=1)[:, 0]
        return jnp.where(is_p[:, :, None], row_k[:, None, :], A).at[:, k].set(row_p)

    for k in range(m):
        score = jnp.where(rows[None, :] >= k, jnp.abs(a[:, :, k]), -1.0)  # pivot among rows k..m−1
        p = jnp.argmax(score, axis=1)
        is_p = rows[None, :] == p[:, None]  # (B, m)
        a, b = swap(a, k, p, is_p), swap(b, k, p, is_p)
        factor = jnp.where(rows[None, :] > k, a[:, :, k] / a[:, k, k, None], 0.0)  # (B, m)
        a = a - factor[:, :, None] * a[:, k, None, :]
        b = b - factor[:, :, None] * b[:, k, None, :]
    x = cast("list[jax.Array]", [None] * m)  # back substitution on the upper-triangular a (x[j > k] set first)
    for k in reversed(range(m)):
        acc = b[:, k]
        for j in range(k + 1, m):
            acc = acc - a[:, k, j, None] * x[j]
        x[k] = acc / a[:, k, k, None]
    return jnp.stack(x, axis=1)


def _one_at_a_time(fn, core_ndims):
    """``fn`` (written for one problem) applied over leading batch dimensions,
    one problem per LAPACK call on CPU and batched elsewhere. ``core_ndims``: the
    number of trailing (core) dimensions of each argument."""
    sequential = jax.custom_batching.sequential_vmap(fn)

    def on_cpu(*args):
        batch = args[0].shape[: args[0].ndim - core_ndims[0]]
        if not batch:
            return sequential(*args)
        flat = [a.reshape((-1,) + a.shape[a.ndim - c:]) for a, c in zip(args, core_ndims)]
        out = jax.lax.map(lambda xs: sequential(*xs), flat)
        return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)

    def call(*args):
        # fn itself takes batch dimensions: the native batched kernels elsewhere
        return jax.lax.platform_dependent(*args, cpu=on_cpu, default=fn)

    return call


def _cholesky_solve_one(a, b):
    c = jax.scipy.linalg.cho_factor(a, lower=True)
    return jax.scipy.linalg.cho_solve(c, b)


_lu_solve = _one_at_a_time(jnp.linalg.solve, (2, 2))
_cholesky_solve = _one_at_a_time(_cholesky_solve_one, (2, 2))


def _broadcast(a, b):
    """a (..., m, m), b (..., m) or (..., m, r) → a, b (B..., m, m), (B..., m, r) and
    whether b was a vector."""
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a must have shape (..., m, m), got {a.shape}")
    vector = b.ndim == a.ndim - 1
    if vector:
        b = b[..., None]
    if b.shape[-2] != a.shape[-1]:
        raise ValueError(f"b must have shape (..., {a.shape[-1]}) or (..., {a.shape[-1]}, r), got {b.shape}")
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    dtype = jnp.result_type(a, b)
    a = jnp.broadcast_to(a, batch + a.shape[-2:]).astype(dtype)
    b = jnp.broadcast_to(b, batch + b.shape[-2:]).astype(dtype)
    return a, b, vector


def _linear_solve(a, b, lapack_solve, symmetric):
    matvec = lambda v: matmul(a, v)
    return jax.lax.custom_linear_solve(
        matvec, b, solve=lambda _, r: lapack_solve(jax.lax.stop_gradient(a), r),
        transpose_solve=lambda _, r: lapack_solve(jnp.swapaxes(jax.lax.stop_gradient(a), -1, -2), r),
        symmetric=symmetric)


def solve(a, b) -> jax.Array:
    """x with a x = b: a (..., m, m), b (..., m) or (..., m, r), batch dimensions
    broadcast. Like ``jnp.linalg.solve`` (LU with partial pivoting), but safe on
    CPU under any transformation (see the module docstring) and differentiable
    in a and b to any order."""
    a, b, vector = _broadcast(a, b)
    m = a.shape[-1]
    batch = a.shape[:-2]
    if m <= SMALL:
        flat = small_solve(a.reshape((-1, m, m)), b.reshape((-1,) + b.shape[-2:]))
        x = flat.reshape(batch + b.shape[-2:])
    else:
        x = _linear_solve(a, b, _lu_solve, symmetric=False)
    return x[..., 0] if vector else x


def solve_spd(a, b) -> jax.Array:
    """x with a x = b for symmetric positive definite a (..., m, m), by Cholesky
    after symmetric Jacobi scaling (D a D with D = diag(a)^{-1/2}, which leaves
    the solution exact and makes the factorisation insensitive to the scale of
    the rows). Non-finite entries of x signal that a is not numerically SPD;
    callers test for them (:func:`vaefp_jax.lipschitz` falls back to a
    gradient step). Safe on CPU like :func:`solve`; differentiable."""
    a, b, vector = _broadcast(a, b)
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    scale = jnp.where(diag > 0, jax.lax.rsqrt(jnp.where(diag > 0, diag, 1.0)), 1.0)  # (..., m)
    a_s = scale[..., :, None] * a * scale[..., None, :]
    b_s = scale[..., :, None] * b
    y = _linear_solve(a_s, b_s, _cholesky_solve, symmetric=True)
    x = scale[..., :, None] * y
    return x[..., 0] if vector else x


_eigh = _one_at_a_time(lambda a: tuple(jnp.linalg.eigh(a)), (2,))


def eigh(a):
    """(w, v) = eigenvalues (ascending) and eigenvectors of symmetric a (..., m, m),
    like ``jnp.linalg.eigh`` but safe on CPU (see the module docstring). Not
    differentiable (the package uses it for starts and certificates only)."""
    return _eigh(jax.lax.stop_gradient(jnp.asarray(a)))


def gmres(op, b, *, tol: float, restart: int, cycles: int) -> jax.Array:
    """x with ‖op(x) − b‖ ≤ ``tol`` ‖b‖, or GMRES's best after ``cycles`` restarts of ``restart``
    products: ``jax.scipy.sparse.linalg.gmres`` with Givens rotations in plain XLA
    ("incremental"; the default "batched" least-squares step would call LAPACK, see above)
    and a bounded number of restarts (its default, 10 × size, is a near-hang where ``tol``
    is below the working precision)."""
    x, _ = jax.scipy.sparse.linalg.gmres(op, b, tol=tol, atol=0.0, restart=restart, maxiter=cycles,
                                         solve_method="incremental")
    return x
