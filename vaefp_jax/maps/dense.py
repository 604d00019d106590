"""The dense map: eq. (14)–(15) with the full (K, n) logits, :mod:`vaefp_jax.equations` itself."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax import equations, native, tile_jacobian
from vaefp_jax.maps.base import StepMap

__all__ = ["DenseMap"]


FORMS = {"one_exponential": equations.evaluate, "log_space": equations.evaluate_log_space}
KERNELS = ("auto", "native", "xla")


@dataclasses.dataclass(frozen=True)
class DenseMap(StepMap):
    """F(ψ) from one (K, n) array of logits (XLA keeps two or three such arrays
    alive per β). Fastest while they fit in cache; see :class:`BlockedMap` beyond.

    ``form``: "one_exponential" (default; :func:`vaefp_jax.equations.evaluate`, one
    exp per (tile, point) pair) or "log_space" (:func:`vaefp_jax.equations.evaluate_log_space`,
    two: the reference).

    ``reuse_shifts`` (one-exponential form only, default True): inside an iteration
    (:meth:`evaluate_warm`) take the shifts of the exponentials from the previous
    evaluation's normalisers (log c_i, log Σ_i m_ib) instead of two maxima over the
    logits (:func:`vaefp_jax.equations.evaluate_shifted`): one pass over the (K, n) pairs
    instead of three. When the previous shifts do not keep every sum in range (the first
    step, a large move at small β) the value is recomputed by :func:`evaluate`; the result
    equals :meth:`evaluate`'s to rounding either way. ``False`` always takes the maxima.

    ``kernel``: how that one pass is computed on CPU. "native": the C++ kernel of
    :mod:`vaefp_jax.native` (E computed and read once, threads on XLA's pool; compiled on
    first use, a ``ValueError`` from :meth:`check` where it cannot be built); "xla": XLA's
    operations (two products, each reading E: :func:`~vaefp_jax.equations.evaluate_shifted`);
    "auto" (default): "native" where it is built and takes the problem (float32/float64,
    d ≤ 64), else "xla". Other platforms (GPU) always use XLA's form. Same values to rounding
    (tests/test_native.py); the fallback, the maxima and the derivatives are XLA's in all
    three."""

    form: str = "one_exponential"
    reuse_shifts: bool = True
    kernel: str = "auto"

    factored = True

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {sorted(FORMS)}, got {self.form!r}")
        if not isinstance(self.reuse_shifts, bool):
            raise ValueError(f"reuse_shifts must be True or False, got {self.reuse_shifts!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {list(KERNELS)}, got {self.kernel!r}")
        if self.kernel == "native" and not self._warm:
            raise ValueError("kernel='native' computes the one pass with reused shifts: it needs "
                             "form='one_exponential' and reuse_shifts=True")

    def check(self, num_points, num_tiles, dim):
        """Also builds (or loads from the cache) the C++ kernel, here and not while tracing,
        where this map may use it: ``kernel="native"``, or ``"auto"`` with reused shifts,
        d ≤ 64 and JAX's default backend the CPU (``prepare`` calls ``check`` before tracing;
        the traced map only reads the status this determined: :func:`vaefp_jax.native.supports`)."""
        if self.kernel == "native":
            st = native.ensure_built()
            if not st.available:
                raise ValueError(f"DenseMap(kernel='native'): {st} (use kernel='auto' or 'xla')")
            if dim > native.shifted.MAX_D:
                raise ValueError(f"DenseMap(kernel='native') takes d <= {native.shifted.MAX_D}, got d = {dim}")
        elif (self.kernel == "auto" and self._warm and dim <= native.shifted.MAX_D
              and jax.default_backend() == "cpu"):
            native.ensure_built()             # never raises: unavailable means XLA's form

    def _shifted(self, psi, x, beta, log_prior, state):
        """(MapValue, ok) of the one pass, by the kernel chosen (see the class docstring). "auto"
        takes the kernel only where this process has already built it (``check``); traced
        without a ``check`` first, it takes XLA's form. "native" checks (and so builds, if no
        ``check`` did) and raises where the kernel is unavailable."""
        args = (psi, x, beta, log_prior, *state)
        if self.kernel == "xla":
            return equations.evaluate_shifted(*args)
        if self.kernel == "native":
            self.check(x.shape[-2], psi.shape[-2], x.shape[-1])
        if not native.supports(x.shape[-1], psi.dtype):
            return equations.evaluate_shifted(*args)
        return jax.lax.platform_dependent(*args, cpu=native.evaluate_shifted, default=equations.evaluate_shifted)

    def evaluate(self, psi, x, beta, log_prior):
        return FORMS[self.form](psi, x, beta, log_prior)

    @property
    def _warm(self) -> bool:
        return self.reuse_shifts and self.form == "one_exponential"

    def init_state(self, num_points, num_tiles, dtype):
        """(log c (n,), log Σ m (K,)) of "no previous evaluation": +inf, which
        :func:`~vaefp_jax.equations.evaluate_shifted` rejects (E = 0), so the first
        evaluation takes the maxima."""
        if not self._warm:
            return ()
        return jnp.full((num_points,), jnp.inf, dtype), jnp.full((num_tiles,), jnp.inf, dtype)

    def evaluate_warm(self, psi, x, beta, log_prior, state):
        """(MapValue, its (log c, log Σ m)): one pass with the previous normalisers as
        shifts, or, where they fail the range check, :meth:`evaluate`. The fallback is a
        ``while_loop`` of at most one trip, not a ``cond``: under ``vmap`` a ``cond`` runs
        both branches for every lane, a ``while_loop`` runs its body only while some lane
        needs it."""
        if not self._warm:
            return self.evaluate(psi, x, beta, log_prior), state
        value, ok = self._shifted(psi, x, beta, log_prior, state)

        def recompute(carry):
            return self.evaluate(psi, x, beta, log_prior), jnp.ones_like(ok)

        value, _ = jax.lax.while_loop(lambda carry: ~carry[1], recompute, (value, ok))
        return value, (value.log_c, value.log_mass)

    def jacobian(self, psi, x, beta, log_prior):
        """The closed form of ∂F/∂ψ (:func:`vaefp_jax.tile_jacobian.jacobian_factors`): products
        from the (K, n) weights with no exponential, and the Woodbury factors."""
        return tile_jacobian.jacobian_factors(psi, x, beta, log_prior)

    def order_parameter(self, psi, x, beta, log_prior):
        return equations.order_parameter(psi, x, beta, log_prior)

    def __repr__(self):
        args = [f"form={self.form!r}"] if self.form != "one_exponential" else []
        args += [] if self.reuse_shifts else ["reuse_shifts=False"]
        args += [] if self.kernel == "auto" else [f"kernel={self.kernel!r}"]
        return f"DenseMap({', '.join(args)})"
