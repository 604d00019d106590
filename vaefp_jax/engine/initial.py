"""The initial decoder ψ^0 of a solve (Appendix A, and our choice when d ≠ d_z)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate, linalg
from vaefp_jax.grid import LatentGrid
from vaefp_jax.precision import matmul

__all__ = ["initial_psi", "initial_batch", "check_initial"]


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
    scale: float | jax.Array
    if d == grid.dim:
        centre, scale = z, 1.0
    else:
        mean = x.mean(axis=0)
        xc = x - mean
        cov = matmul(xc.T, xc) / n
        lam, vec = linalg.eigh(cov)
        order = jnp.argsort(lam)[::-1]
        m = min(grid.dim, d)
        lam, vec = lam[order][:m], vec[:, order][:, :m]
        half = max(float(np.max(np.abs(grid.z[np.isfinite(grid.z)]))), 1e-12)
        coords = z[:, :m] / half
        centre = mean + matmul(coords * 2 * jnp.sqrt(jnp.maximum(lam, 0)), vec.T)
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
