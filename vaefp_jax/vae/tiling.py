"""Does a VAE tile its latent space as in Prop. 2? Metrics for ANY encoder.

Prop. 2: at the optimum of a high-capacity VAE with prior π = N(0, I), the
posteriors are q(z|x_i) = π(z) 1[z ∈ Ω_i] / π_i on tiles Ω_i that partition the
latent space and are equiprobable, π_i = 1/n, so E_i KL(q(·|x_i) ‖ π) = ln n.

:func:`tiling_metrics` needs only two callables,

    log_q(z, x)         z (m, d_z), x (D,) → (m,)   log q(z|x) (may be −inf)
    sample(key, x, num) x (D,) → (num, d_z)         draws z ~ q(·|x)

and the n training points. It reports, by Monte Carlo:

* tile masses: draw M prior samples z ~ π, assign each to argmax_i log q(z|x_i);
  mass_i = share assigned to i (ideal 1/n), their coefficient of variation
  std/mean, and the number of empty tiles;
* purity: share of posterior samples z ~ q(·|x_i) whose argmax is i (ideal 1);
* mean KL(q‖π) = E_i E_q[log q(z|x_i) − log π(z)] (ideal ln n);
* mutual information I(i; z) = E_i E_q[log q(z|x_i) − log((1/n) Σ_j q(z|x_j))]
  (ideal ln n; 0 for a collapsed encoder);
* marginal KL(q̄‖π) of the aggregate posterior q̄ = (1/n) Σ_j q(·|x_j)
  (ideal 0). The three satisfy mean KL = I + marginal KL exactly, also for the
  estimates, which share samples.

Standard errors are the sample standard deviation over the n·S posterior
samples divided by √(n·S).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate
from vaefp_jax.precision import highest_default

__all__ = ["TilingMetrics", "tiling_metrics", "evaluate_tiling", "log_q_matrix", "standard_normal_logpdf"]

LogQ = Callable[[jax.Array, jax.Array], jax.Array]
Sampler = Callable[[jax.Array, jax.Array, int], jax.Array]


@dataclasses.dataclass(frozen=True)
class TilingMetrics:
    """Tiling of the latent space by n posteriors (see the module docstring).

    masses (n,), purity_per_exemplar (n,), kl_per_exemplar (n,): per exemplar.
    Scalars: num_exemplars n, log_n = ln n, num_prior_samples M,
    num_posterior_samples S (per exemplar), mass_cv, empty_tiles, purity,
    mean_kl(_stderr), mutual_information(_stderr), marginal_kl(_stderr).
    """

    num_exemplars: int
    log_n: float
    num_prior_samples: int
    num_posterior_samples: int
    masses: np.ndarray
    mass_cv: float
    empty_tiles: int
    purity: float
    purity_per_exemplar: np.ndarray
    mean_kl: float
    mean_kl_stderr: float
    kl_per_exemplar: np.ndarray
    mutual_information: float
    mutual_information_stderr: float
    marginal_kl: float
    marginal_kl_stderr: float

    @property
    def mass_range(self) -> tuple[float, float]:
        """(min, max) of n·mass_i (1 for equiprobable tiles)."""
        scaled = self.masses * self.num_exemplars
        return float(scaled.min()), float(scaled.max())

    def to_dict(self) -> dict[str, Any]:
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}
        d["mass_range_times_n"] = list(self.mass_range)
        return d

    def to_json(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def summary(self) -> str:
        lo, hi = self.mass_range
        return "\n".join([
            f"tiles n = {self.num_exemplars} (ln n = {self.log_n:.4f}); M = {self.num_prior_samples} prior, "
            f"S = {self.num_posterior_samples} posterior samples per exemplar",
            f"tile masses × n in [{lo:.3f}, {hi:.3f}], CV = {self.mass_cv:.4f}, empty tiles = {self.empty_tiles}",
            f"purity = {self.purity:.4f}",
            f"mean KL(q‖π) = {self.mean_kl:.4f} ± {self.mean_kl_stderr:.4f}",
            f"I(i; z) = {self.mutual_information:.4f} ± {self.mutual_information_stderr:.4f}",
            f"KL(q̄‖π) = {self.marginal_kl:.4f} ± {self.marginal_kl_stderr:.4f}",
        ])


def standard_normal_logpdf(z: np.ndarray) -> np.ndarray:
    """log N(z; 0, I): (m, d) → (m,)."""
    return -0.5 * np.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2.0 * math.pi)


def _logsumexp_rows(L: np.ndarray) -> np.ndarray:
    """log Σ_j exp L[s, j]: (m, n) → (m,), exact for rows with −inf entries (not all −inf)."""
    top = np.max(L, axis=1, keepdims=True)
    return top[:, 0] + np.log(np.sum(np.exp(L - top), axis=1))


def log_q_matrix(log_q: LogQ, z: np.ndarray, x: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """L[s, i] = log q(z_s | x_i): z (m, d_z), x (n, D) → float64 (m, n).

    z is passed in chunks of exactly ``chunk`` rows (the last one padded) so a
    jit-compiled log_q compiles once. log_q runs under
    :func:`~vaefp_jax.precision.highest_default`: its matrix products that name no
    precision (a network's layers) run at ``HIGHEST`` (no TF32 on a GPU)."""
    z = np.asarray(z, np.float32)
    m = z.shape[0]
    size = min(chunk, m)
    out = np.empty((m, x.shape[0]), np.float64)
    for start in range(0, m, size):
        block = z[start:start + size]
        rows = block.shape[0]
        if rows < size:
            block = np.concatenate([block, np.zeros((size - rows, z.shape[1]), z.dtype)])
        for i in range(x.shape[0]):
            with highest_default():
                vals = np.asarray(log_q(jnp.asarray(block), jnp.asarray(x[i])), np.float64)
            if vals.shape != (size,):
                raise ValueError(f"log_q(z, x) must return shape (m,) = ({size},), got {vals.shape}")
            out[start:start + rows, i] = vals[:rows]
    if np.any(np.isnan(out)) or np.any(out == np.inf):
        raise ValueError("log_q returned NaN or +inf")
    return out


def _check_inputs(x: np.ndarray, num_prior: int, num_posterior: int) -> None:
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n ≥ 2, D), got {x.shape}")
    for name, v in (("num_prior", num_prior), ("num_posterior", num_posterior)):
        _validate.check_int(name, v)


def tiling_metrics(log_q: LogQ, sample: Sampler, x: np.ndarray, key: jax.Array, *,
                   num_prior: int = 100_000, num_posterior: int = 1000, chunk: int = 16384) -> TilingMetrics:
    """Tiling metrics of the posteriors q(·|x_i) of any encoder (see module docstring).

    log_q: (z (m, d_z), x (D,)) → (m,). sample: (key, x (D,), num) → (num, d_z).
    x: (n, D) the training points. key: a JAX PRNG key.
    num_prior: M prior samples for the tile masses; num_posterior: S samples per exemplar.
    log_q and sample run under :func:`~vaefp_jax.precision.highest_default` (matrix
    products at ``HIGHEST``, see :mod:`vaefp_jax.precision`).
    """
    x = np.asarray(x)
    _check_inputs(x, num_prior, num_posterior)
    n = x.shape[0]
    k_prior, k_post = jax.random.split(key)
    with highest_default():
        post = [np.asarray(sample(k, jnp.asarray(x[i]), int(num_posterior)), np.float32)
                for i, k in enumerate(jax.random.split(k_post, n))]
    if any(p.ndim != 2 or p.shape[0] != num_posterior for p in post):
        raise ValueError(f"sample(key, x, num) must return (num, d_z), got {post[0].shape}")
    d_z = post[0].shape[1]

    # Tile masses under the prior.
    z_prior = np.asarray(jax.random.normal(k_prior, (int(num_prior), d_z)), np.float32)
    owner = np.argmax(log_q_matrix(log_q, z_prior, x, chunk), axis=1)
    masses = np.bincount(owner, minlength=n) / float(num_prior)

    # Posterior samples: purity, KL, MI, marginal KL.
    z_post = np.concatenate(post)                      # (n·S, d_z), exemplar-major
    own = np.repeat(np.arange(n), num_posterior)       # (n·S,)
    L = log_q_matrix(log_q, z_post, x, chunk)          # (n·S, n)
    own_lq = L[np.arange(L.shape[0]), own]
    if not np.all(np.isfinite(own_lq)):
        raise ValueError("log q(z|x_i) is not finite at some of q(·|x_i)'s own samples")
    log_prior = standard_normal_logpdf(z_post.astype(np.float64))
    log_mix = _logsumexp_rows(L) - math.log(n)       # log q̄(z)
    hit = np.argmax(L, axis=1) == own
    kl_s, mi_s, mkl_s = own_lq - log_prior, own_lq - log_mix, log_mix - log_prior
    root = math.sqrt(L.shape[0])

    return TilingMetrics(
        num_exemplars=n, log_n=math.log(n), num_prior_samples=int(num_prior),
        num_posterior_samples=int(num_posterior), masses=masses,
        mass_cv=float(np.std(masses) / np.mean(masses)), empty_tiles=int(np.sum(masses == 0)),
        purity=float(np.mean(hit)), purity_per_exemplar=hit.reshape(n, -1).mean(axis=1),
        mean_kl=float(np.mean(kl_s)), mean_kl_stderr=float(np.std(kl_s) / root),
        kl_per_exemplar=kl_s.reshape(n, -1).mean(axis=1),
        mutual_information=float(np.mean(mi_s)), mutual_information_stderr=float(np.std(mi_s) / root),
        marginal_kl=float(np.mean(mkl_s)), marginal_kl_stderr=float(np.std(mkl_s) / root),
    )


def evaluate_tiling(trained, key: jax.Array | None = None, **kwargs) -> TilingMetrics:
    """:func:`tiling_metrics` of a :class:`~vaefp_jax.vae.trained.TrainedVAE` on its own exemplars
    (key defaults to ``jax.random.key(config.seed + 2)``)."""
    key = jax.random.key(trained.config.seed + 2) if key is None else key
    return tiling_metrics(trained.log_q, trained.sample, np.asarray(trained.exemplars.images), key, **kwargs)
