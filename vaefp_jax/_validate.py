"""Checks at the public boundary: clear ``ValueError``s instead of NaNs later.

These run on concrete (NumPy-convertible) inputs only. Under ``jit`` the inputs
are tracers and the value checks are skipped (shape checks still run), so the
public functions stay traceable. JAX is imported where a check needs it, so that the
JAX-free modules (the grid, the data sets, MNIST's files) can check their integers here.
"""

from __future__ import annotations

import numpy as np


def is_concrete(a) -> bool:
    import jax

    return not isinstance(a, jax.core.Tracer)


def check_float_dtype(name: str, a) -> None:
    """Real numbers only: float or integer dtypes (not bool, complex, strings)."""
    dtype = getattr(a, "dtype", None)
    dtype = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
    import jax.numpy as jnp

    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not real or dtype == np.bool_:
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")


def check_finite(name: str, a) -> None:
    if is_concrete(a) and not np.all(np.isfinite(np.asarray(a))):
        raise ValueError(f"{name} contains NaN or inf")


def check_data(x, name: str = "x") -> None:
    """x: (n, d) with n ≥ 1, d ≥ 1, finite, real."""
    if np.ndim(x) != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {np.shape(x)}")
    n, d = np.shape(x)
    if n == 0 or d == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(x)})")
    check_float_dtype(name, x)
    check_finite(name, x)


def check_psi(psi, x, name: str = "psi", batched: bool | None = False) -> None:
    """psi: (K, d), or (B, K, d) when ``batched``; d must match x."""
    ranks = {False: (2,), True: (3,), None: (2, 3)}[batched]
    if np.ndim(psi) not in ranks:
        want = " or ".join({2: "(K, d)", 3: "(B, K, d)"}[r] for r in ranks)
        raise ValueError(f"{name} must have shape {want}, got shape {np.shape(psi)}")
    if np.shape(psi)[-1] != np.shape(x)[-1]:
        raise ValueError(
            f"{name} has {np.shape(psi)[-1]} data dimensions but x has {np.shape(x)[-1]}"
        )
    if np.shape(psi)[-2] == 0:
        raise ValueError(f"{name} has no tiles")
    check_float_dtype(name, psi)
    check_finite(name, psi)


def check_beta(beta, name: str = "beta", batched: bool = False) -> None:
    if batched and np.ndim(beta) != 1:
        raise ValueError(f"{name} must have shape (B,), got shape {np.shape(beta)}")
    if not batched and np.ndim(beta) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(beta)}")
    if batched and np.shape(beta)[0] == 0:
        raise ValueError(f"{name} is empty")
    check_float_dtype(name, beta)
    if is_concrete(beta):
        b = np.asarray(beta, dtype=np.float64)
        if not np.all(np.isfinite(b)):
            raise ValueError(f"{name} contains NaN or inf")
        if np.any(b <= 0):
            raise ValueError(f"{name} must be > 0, got min {b.min()}")


def check_log_prior(log_prior, num_tiles: int | None = None, atol: float = 1e-4) -> None:
    if np.ndim(log_prior) != 1:
        raise ValueError(f"log_prior must have shape (K,), got shape {np.shape(log_prior)}")
    if num_tiles is not None and np.shape(log_prior)[0] != num_tiles:
        raise ValueError(
            f"log_prior has {np.shape(log_prior)[0]} tiles but psi has {num_tiles}"
        )
    check_float_dtype("log_prior", log_prior)
    if is_concrete(log_prior):
        lp = np.asarray(log_prior, dtype=np.float64)
        if np.any(np.isnan(lp)) or np.any(lp == np.inf):
            raise ValueError("log_prior contains NaN or +inf")
        if not np.any(np.isfinite(lp)):
            raise ValueError("log_prior gives every tile zero mass")
        total = np.exp(lp).sum()
        if abs(total - 1.0) > atol:
            raise ValueError(f"prior masses exp(log_prior) must sum to 1, got {total:.6g}")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'≥' if allow_zero else '>'} 0 and finite, got {value}")


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer (an integral float counts; a bool, a string or
    None does not) ≥ ``minimum``; else a ``ValueError`` saying so in one line."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number or not np.isfinite(value) or int(value) != value or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)
