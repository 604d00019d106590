"""The one result type of a solve: per-problem status, with a warn/raise mechanism.

:class:`Status` enumerates why each problem stopped; :class:`Solution` holds the
fixed points and, per problem, the status, steps and residual, plus the
iteration's and constraint's diagnostics in ``stats``. ``throw`` (in
:func:`vaefp_jax.solve` and :meth:`Solution.check`): ``True`` raises
:class:`NotConvergedError`, ``None`` (default) warns, ``False`` leaves the status
to the caller; under ``jit`` the status is a tracer and nothing is reported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from vaefp_jax import _validate

__all__ = ["Status", "Solution", "NotConvergedError", "status_of"]


class Status(enum.IntEnum):
    """Why a problem stopped."""

    CONVERGED = 0    # the residual fell below the tolerance (and every check below passed)
    MAX_STEPS = 1    # the step budget ran out first
    NONFINITE = 2    # the iterate or its residual became NaN or inf
    UNSTABLE = 3     # converged to a fixed point that is not stable (ρ(∂F/∂ψ) ≥ 1 − margin)
    INFEASIBLE = 4   # the constraint's bound does not hold at the answer

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.CONVERGED: "converged",
    Status.MAX_STEPS: "did not converge within the step budget",
    Status.NONFINITE: "the iterate became non-finite",
    Status.UNSTABLE: "the fixed point found is not stable (a saddle of the free energy)",
    Status.INFEASIBLE: "the constraint does not hold at the answer",
}


class NotConvergedError(RuntimeError):
    """Raised by ``throw=True`` when a problem did not converge."""


def status_of(psi, residual, tol, stable=None, feasible=None):
    """Per-problem :class:`Status` codes (int8) from the iteration's outcome, in priority order."""
    finite = jnp.all(jnp.isfinite(psi), axis=(-2, -1)) & jnp.isfinite(residual)
    code = jnp.where(residual < tol, Status.CONVERGED, Status.MAX_STEPS)
    if stable is not None:
        code = jnp.where((code == Status.CONVERGED) & ~stable, Status.UNSTABLE, code)
    if feasible is not None:
        code = jnp.where((code == Status.CONVERGED) & ~feasible, Status.INFEASIBLE, code)
    return jnp.where(finite, code, Status.NONFINITE).astype(jnp.int8)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["beta", "psi", "status", "steps", "residual", "stats", "trajectory"],
    meta_fields=["tol", "setup"],
)
@dataclasses.dataclass(frozen=True)
class Solution:
    """Fixed points of B problems (a pytree; arrays lead with the problem axis B).

    Attributes:
      beta: (B,) β of each problem.
      psi: (B, K, d) the answer (the fixed point where ``status == CONVERGED``).
      status: (B,) int8 :class:`Status` codes.
      steps: (B,) int32 map evaluations spent.
      residual: (B,) ‖ψ^t − ψ^{t−1}‖_F at the last step (damped iteration) or
        ‖F(ψ) − ψ‖_F (accelerated).
      stats: dict of (B, …) diagnostics: the constraint's values (``strength``,
        ``L``, ``omega``, ``max_violation``) and the iteration's (``newton_steps``,
        ``escapes``, ``spectral_radius``).
      trajectory: (B, T, K, d) ψ every ``record_every`` steps, or None.
      tol: the tolerance on the residual.
      setup: a short description of the iteration, map, constraint and schedule.
    """

    beta: jax.Array
    psi: jax.Array
    status: jax.Array
    steps: jax.Array
    residual: jax.Array
    stats: dict
    trajectory: jax.Array | None
    tol: float
    setup: str = ""

    @property
    def converged(self) -> jax.Array:
        """(B,) bool: status is CONVERGED."""
        return self.status == Status.CONVERGED

    def counts(self) -> dict[str, int]:
        """How many problems ended in each status (concrete results only)."""
        codes = np.asarray(self.status)
        return {s.name.lower(): int(np.sum(codes == s)) for s in Status if np.any(codes == s)}

    def failures(self, limit: int = 8) -> str:
        """One line per failing status, naming its β values (at most ``limit`` each)."""
        codes, beta = np.asarray(self.status), np.asarray(self.beta)
        lines = []
        for s in Status:
            if s is Status.CONVERGED or not np.any(codes == s):
                continue
            bad = beta[codes == s]
            shown = ", ".join(f"{b:.4g}" for b in bad[:limit]) + (", …" if bad.size > limit else "")
            lines.append(f"{bad.size} of {codes.size} β: {s.message} (β = {shown})")
        return "; ".join(lines)

    def check(self, throw: bool | None = None, stacklevel: int = 2) -> "Solution":
        """Report problems that did not converge: raise (``throw=True``), warn
        (``None``) or nothing (``False``). Returns self. Silent under ``jit``."""
        if throw is False or not _validate.is_concrete(self.status):
            return self
        if bool(np.all(np.asarray(self.status) == Status.CONVERGED)):
            return self
        msg = f"{self.failures()} [tol={self.tol:g}; see Solution.status]"
        if throw:
            raise NotConvergedError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)
        return self

    def __repr__(self):
        shape = "×".join(str(s) for s in np.shape(self.psi))
        if _validate.is_concrete(self.status):
            counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        else:
            counts = "traced"
        return f"Solution(psi {shape}, {counts}; tol={self.tol:g}{'; ' + self.setup if self.setup else ''})"
