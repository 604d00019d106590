"""Damped fixed-point iteration, the paper's Appendix A protocol and a tight preset.

    ψ^{t+1} = (1 − damping) G(ψ^t) + damping ψ^t,

with G the problem's target (F of eq. 15, or its constrained image), until
‖ψ^{t+1} − ψ^t‖_F < tol or ``max_steps``.

:meth:`Damped.paper`, Appendix A: exponential smoothing with α = 0.9, at most
400 steps, tolerance 1e-3, ψ^0 at the tile centres plus uniform noise in
[−0.1, 0.1]. *Reading of α*: we take α as the smoothing factor of standard
exponential smoothing, the weight of the new value, s_t = α F(ψ^{t−1}) + (1 − α) s_{t−1};
so ``damping = 1 − α = 0.1``. The other reading (α the weight of the old
iterate) is ``Damped.paper(alpha_on_old=True)``, ``damping = 0.9``: it takes about
3.5 times the steps on Figure 3's setting, and the two readings often stop at
different configurations (different numbers of distinct fixed points at small β);
``benchmarks/alpha_readings.py`` measures both (results in ``benchmarks/RESULTS.md``).

:meth:`Damped.tight` is undamped (the map is coordinate descent on the free
energy, so damping is not needed for stability) with a tolerance near the
working precision, for accurate fixed points (derivatives, phase detection).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaefp_jax import _validate
from vaefp_jax.engine.problem import residual
from vaefp_jax.iterations.base import Iteration, Outcome, default_tol

__all__ = ["Damped"]


@dataclasses.dataclass(frozen=True)
class Damped(Iteration):
    """``damping`` (weight of the previous iterate, in [0, 1)), ``tol`` (on the
    Frobenius norm of ψ^{t+1} − ψ^t; ``None``: 1e-10 in float64, 1e-5 in float32),
    ``max_steps``, ``init_noise`` (half-width of the uniform noise of the default ψ^0)."""

    damping: float = 0.1
    tol: float | None = 1e-3
    max_steps: int = 400
    init_noise: float = 0.1

    has_step = True

    @classmethod
    def paper(cls, alpha: float = 0.9, alpha_on_old: bool = False) -> "Damped":
        """Appendix A. ``alpha`` is the exponential-smoothing factor; by default it
        weights the new map value (``damping = 1 − alpha``)."""
        return cls(damping=alpha if alpha_on_old else 1.0 - alpha, tol=1e-3, max_steps=400, init_noise=0.1)

    @classmethod
    def tight(cls, max_steps: int = 20_000) -> "Damped":
        """Undamped, tolerance by dtype (1e-10 in float64, 1e-5 in float32)."""
        return cls(damping=0.0, tol=None, max_steps=max_steps, init_noise=0.1)

    def __post_init__(self):
        for name in ("damping", "tol", "init_noise"):   # plain numbers: the object is a jit key
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if not (0.0 <= float(self.damping) < 1.0):
            raise ValueError(f"damping must be in [0, 1), got {self.damping}")
        if self.tol is not None:
            _validate.check_positive("tol", self.tol)
        if isinstance(self.max_steps, bool) or int(self.max_steps) != self.max_steps or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps}")
        _validate.check_positive("init_noise", self.init_noise, allow_zero=True)
        object.__setattr__(self, "max_steps", int(self.max_steps))

    def resolved(self, dtype) -> "Damped":
        return self if self.tol is not None else dataclasses.replace(self, tol=default_tol(dtype))

    def step(self, problem, psi, state, t):
        """One damped step from ψ: (ψ', state', ‖ψ' − ψ‖_F)."""
        target, state, _ = problem.update(psi, state, t)
        new = (1 - self.damping) * target + self.damping * psi
        return new, state, residual(new, psi)

    def run(self, problem, psi0, state0, key, record_every: int) -> Outcome:
        """Iterate one problem from ψ0 (K, d) in a ``lax.while_loop``; with
        ``record_every`` > 0 also ψ every that many steps (entry 0 is ψ0; entries past
        the stop repeat the last ψ)."""
        tol, max_steps = self.tol, int(self.max_steps)
        n_rec = (max_steps // record_every + 1) if record_every else 0

        def cond(s):
            return (s["t"] < max_steps) & (s["res"] >= tol)  # a NaN residual compares False: stops

        def body(s):
            new, state, res = self.step(problem, s["psi"], s["state"], s["t"])
            t = s["t"] + 1
            out = dict(psi=new, state=state, t=t, res=res)
            if record_every:
                out["traj"] = jax.lax.cond(t % record_every == 0,
                                           lambda tr: tr.at[t // record_every].set(new), lambda tr: tr, s["traj"])
            return out

        init = dict(psi=psi0, state=state0, t=jnp.int32(0), res=jnp.asarray(jnp.inf, psi0.dtype))
        if record_every:
            init["traj"] = jnp.broadcast_to(psi0, (n_rec,) + psi0.shape)
        s = jax.lax.while_loop(cond, body, init)
        traj = None
        if record_every:
            idx = jnp.arange(n_rec)
            traj = jnp.where((idx > s["t"] // record_every)[:, None, None], s["psi"][None], s["traj"])
        return Outcome(psi=s["psi"], state=s["state"], steps=s["t"], residual=s["res"], trajectory=traj,
                       stable=None, stats={})

    def __repr__(self):
        return f"Damped(damping={self.damping:g}, tol={self.tol}, max_steps={self.max_steps})"
