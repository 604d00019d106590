r"""Proposition 5's reduced fixed point: m distinct fixed points ψ_a with masses γ_a.

Coincident tiles stay coincident: F_b of eq. (15) depends on the tile b only through ψ_b
(m_ib = e^{−‖x_i−ψ_b‖²/2β}/c_i), so a configuration of m distinct fixed points is exactly
an m-tile problem whose prior masses are the summed masses of the tiles in each group:

    p(a|i) = γ_a e^{−‖x_i−ψ_a‖²/2β} / Σ_b γ_b e^{−‖x_i−ψ_b‖²/2β},
    ψ_a ← Σ_i p(a|i) x_i / Σ_i p(a|i).

With the masses *fixed* (``free_masses=False``) this is the tile model of eq. (14)–(15)
itself, tested against it. In the high-capacity limit (Prop. 5) the mass γ_a of the set Ω_a
solves Σ_i e^{−H_ia/β} / Σ_b e^{−H_ib/β} γ_b = n with H_ia = ‖x_i − ψ_a‖²/2, that is
γ_a = (1/n) Σ_i p(a|i): with ``free_masses=True`` the masses follow that update too
(mass-constrained deterministic annealing, Rose 1998, at temperature T = 2β; EM for an
isotropic Gaussian mixture of variance β with free weights). One step costs O(n m d) and
O(n (m + d)) memory: the squared distances are ‖x‖² − 2 x·ψ + ‖ψ‖² by a matrix product
(callers centre x on its mean, :mod:`vaefp_jax.phase.annealing` does), over blocks of
``chunk`` points for large n.

Acceleration. Plain steps contract like ρ^t, and ρ → 1 next to every split (the pitchfork
of the new pair). :func:`solve_reduced` extrapolates them by SQUAREM (Varadhan & Roland
2008, scheme S3): from θ₀, θ₁ = F(θ₀), θ₂ = F(θ₁), r = θ₁ − θ₀, v = θ₂ − 2θ₁ + θ₀,
α = −‖r‖/‖v‖ clipped to [−α_max, −1], θ' = θ₀ − 2αr + α²v, then one stabilising step
F(θ'). EM never lowers the mixture log likelihood L(ψ, γ) = Σ_i log Σ_a γ_a e^{−‖x_i−ψ_a‖²/2β},
and L comes free with every step (it is the posterior's normaliser), so an extrapolation is
kept only where L(θ') ≥ L(θ₁) (else the plain θ₂ is kept and α_max shrinks): the scheme is
monotone in L like EM itself, and α = −1 is two plain steps.

Critical temperatures. Perturb the members of a group a inside the group, δψ_b = w_b v with
Σ_b π_b w_b = 0. To first order c_i does not change (the perturbations cancel in it), and

    δF_b = w_b (C_a/β) v,   C_a = Σ_i p(i|a) (x_i − ψ_a)(x_i − ψ_a)ᵀ,   p(i|a) = p(a|i)/Σ_j p(a|j),

so the group is stable exactly while β > λ_max(C_a) (:func:`critical_temperature`,
:func:`cluster_spectra`); for one cluster C = Cov and β_c = λ_max(Cov). The mass update
leaves the condition unchanged to first order, since Σ_i p(i|a)(x_i − ψ_a) = 0 at the fixed
point (tests/test_reduced.py measures the split mode's one-step growth against λ_max(C_a)/β).
λ_max(C_a) needs no d × d matrix: C_a v = Σ_i p(i|a) r_i (r_i·v) costs O(n d), so above
``dense_max`` dimensions it comes from Lanczos on that product, warm-started from the
previous direction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from vaefp_jax import linalg
from vaefp_jax.engine import loop
from vaefp_jax.precision import matmul

__all__ = ["PlainEM", "ReducedFixedPoint", "ReducedProblem", "Squarem", "cluster_spectra", "critical_temperature",
           "log_likelihood", "log_posterior", "order_parameter", "reduced_step", "solve_reduced"]

# Above this dimension λ_max(C_a) comes from Lanczos on C_a v (O(n d) per product) rather
# than from eigh of the d × d matrix (O(n d²) to form).
DENSE_MAX = 128


def _sq_dist(x, psi):
    """(n, m) ‖x_i − ψ_a‖² = ‖x_i‖² − 2 x_i·ψ_a + ‖ψ_a‖², clipped at 0 (x centred by the caller:
    the cancellation error is ~ε ‖x‖², negligible against the distances in float64)."""
    d2 = jnp.sum(x * x, axis=1)[:, None] - 2.0 * matmul(x, psi.T) + jnp.sum(psi * psi, axis=1)[None, :]
    return jnp.maximum(d2, 0.0)


def _normalised(log_mass):
    return log_mass - logsumexp(log_mass)


def log_posterior(psi, log_mass, x, beta):
    """(n, m) log p(a|i) = log γ_a − ‖x_i − ψ_a‖²/2β − log Σ_b γ_b e^{−‖x_i − ψ_b‖²/2β}.

    psi: (m, d); log_mass: (m,) log γ_a (need not be normalised); x: (n, d); beta: ()."""
    logits = log_mass[None, :] - _sq_dist(x, psi) / (2.0 * beta)
    return logits - logsumexp(logits, axis=1, keepdims=True)


def _block_moments(psi, log_mass, xb, beta):
    """For a block of points: (log Σ_i p(a|i) (m,), the p(i|a)-weighted mean of the block (m, d),
    Σ_i log Σ_a γ_a e^{−‖x_i−ψ_a‖²/2β} over the block)."""
    logits = _normalised(log_mass)[None, :] - _sq_dist(xb, psi) / (2.0 * beta)
    norm = logsumexp(logits, axis=1, keepdims=True)
    log_p = logits - norm
    log_total = logsumexp(log_p, axis=0)
    safe = jnp.where(jnp.isfinite(log_total), log_total, 0.0)
    w = jnp.exp(log_p - safe[None, :])
    return log_total, matmul(w.T, xb), jnp.sum(norm)


def _merge(a, b):
    """Two blocks' moments merged (running log-sum-exp of the totals, mass-weighted means)."""
    new = jnp.logaddexp(a[0], b[0])
    ok = jnp.isfinite(new)
    safe = jnp.where(ok, new, 0.0)
    w_a = jnp.where(ok, jnp.exp(a[0] - safe), 0.0)[:, None]
    w_b = jnp.where(ok, jnp.exp(b[0] - safe), 0.0)[:, None]
    return new, w_a * a[1] + w_b * b[1], a[2] + b[2]


def _moments(psi, log_mass, x, beta, chunk):
    """(log Σ_i p(a|i) (m,), ψ' = Σ_i p(a|i) x_i / Σ_i p(a|i) (m, d), log likelihood) over all
    points; when n > chunk, over ⌈n/chunk⌉ blocks of equal size read in place from x (a loop of
    dynamic slices: x is never copied or padded) and a last block of the few remaining points,
    merged by a running log-sum-exp."""
    n, d = x.shape
    if chunk is None or n <= chunk:
        return _block_moments(psi, log_mass, x, beta)
    blocks = -(-n // chunk)
    size = n // blocks                       # balanced: blocks × size ≤ n < blocks × (size + 1)
    m = psi.shape[0]

    def body(k, carry):
        xb = jax.lax.dynamic_slice_in_dim(x, k * size, size)
        return _merge(carry, _block_moments(psi, log_mass, xb, beta))

    init = (jnp.full(m, -jnp.inf, x.dtype), jnp.zeros((m, d), x.dtype), jnp.zeros((), x.dtype))
    out = jax.lax.fori_loop(0, blocks, body, init)
    if blocks * size < n:
        out = _merge(out, _block_moments(psi, log_mass, x[blocks * size:], beta))
    return out


# log γ at or below which a cluster is padding (an empty slot of a padded branch): the step
# maps it to a constant (ψ = 0, log γ = EMPTY), so it takes no point, and the Jacobian of the
# map is 0 on it (I − ∂F/∂z stays invertible for the implicit derivatives).
EMPTY = -1e30


def _step(psi, log_mass, x, beta, free_masses, chunk):
    """(ψ', log γ', L(ψ, γ)): one reduced step and the log likelihood of its input."""
    log_total, mean, ll = _moments(psi, log_mass, x, beta, chunk)
    alive = jnp.isfinite(log_total)[:, None]
    new_psi = jnp.where(alive, mean, psi)          # a cluster no point reaches keeps its place
    new_lm = log_total - jnp.log(x.shape[0]) if free_masses else log_mass
    empty = log_mass <= 0.5 * EMPTY
    new_psi = jnp.where(empty[:, None], jnp.zeros_like(new_psi), new_psi)
    new_lm = jnp.where(empty, jnp.asarray(EMPTY, new_lm.dtype), new_lm)
    return new_psi, new_lm, ll


def reduced_step(psi, log_mass, x, beta, free_masses: bool = True, chunk: int | None = None):
    """One step (ψ, log γ) → (ψ', log γ') of the reduced map (module docstring): ψ'_a the
    p(a|i)-weighted mean of the data, γ'_a = (1/n) Σ_i p(a|i) when ``free_masses``, else γ."""
    new_psi, new_lm, _ = _step(psi, log_mass, x, beta, free_masses, chunk)
    return new_psi, new_lm


def log_likelihood(psi, log_mass, x, beta, chunk: int | None = None):
    """Σ_i log Σ_a γ_a e^{−‖x_i−ψ_a‖²/2β} (γ normalised): the objective EM and SQUAREM never lower."""
    return _moments(psi, log_mass, x, beta, chunk)[2]


def order_parameter(psi, log_mass, x, beta):
    """u = (1/n) Σ_i Σ_a p(a|i) ‖x_i − ψ_a‖²: the reconstruction error of eq. (3) at the reduced point."""
    p = jnp.exp(log_posterior(psi, log_mass, x, beta))
    return jnp.sum(p * _sq_dist(x, psi)) / x.shape[0]


def _cluster_weights(psi, log_mass, x, beta):
    """(n, m) p(i|a) = p(a|i) / Σ_j p(a|j)."""
    log_p = log_posterior(psi, log_mass, x, beta)
    return jnp.exp(log_p - logsumexp(log_p, axis=0)[None, :])


@jax.jit
def critical_temperature(psi, log_mass, x, beta, cluster):
    """(λ_max(C_a), v): the β below which cluster ``cluster`` splits (module docstring) and the
    direction it splits along, from the d × d matrix C_a."""
    w = _cluster_weights(psi, log_mass, x, beta)[:, cluster]
    r = x - psi[cluster]
    evals, evecs = linalg.eigh(matmul((r * w[:, None]).T, r))
    return evals[-1], evecs[:, -1]


def _dense_spectra(psi, w, x):
    def one(args):
        p, wa = args
        r = x - p
        evals, evecs = linalg.eigh(matmul((r * wa[:, None]).T, r))
        return evals[-1], evecs[:, -1]

    return jax.lax.map(one, (psi, w.T))


def _lanczos_spectra(psi, w, x, v0, iters):
    """Top eigenpairs of every C_a by ``iters`` Lanczos steps (full reorthogonalisation), all
    clusters at once: C_a v_a = xᵀ q_a − ψ_a Σ_i q_ia with q_ia = p(i|a) (x_i·v_a − ψ_a·v_a)."""
    m, d = psi.shape

    def matvec(V):                                   # (m, d) → (m, d)
        q = w * (matmul(x, V.T) - jnp.sum(psi * V, axis=1)[None, :])
        return matmul(q.T, x) - psi * jnp.sum(q, axis=0)[:, None]

    V0 = v0 / jnp.linalg.norm(v0, axis=1, keepdims=True)
    basis = jnp.zeros((iters, m, d), x.dtype).at[0].set(V0)
    alphas = jnp.zeros((iters, m), x.dtype)
    betas = jnp.zeros((iters, m), x.dtype)

    def body(k, carry):
        basis, alphas, betas = carry
        Vk = basis[k]
        W = matvec(Vk)
        a = jnp.sum(W * Vk, axis=1)
        coef = jnp.einsum("kmd,md->km", basis, W)    # full reorthogonalisation, twice
        W = W - jnp.einsum("km,kmd->md", coef, basis)
        coef = jnp.einsum("kmd,md->km", basis, W)
        W = W - jnp.einsum("km,kmd->md", coef, basis)
        b = jnp.linalg.norm(W, axis=1)
        nxt = W / jnp.where(b > 0, b, 1.0)[:, None]
        basis = jnp.where(k + 1 < iters, basis.at[jnp.minimum(k + 1, iters - 1)].set(nxt), basis)
        return basis, alphas.at[k].set(a), betas.at[k].set(b)

    basis, alphas, betas = jax.lax.fori_loop(0, iters, body, (basis, alphas, betas))

    def ritz(a, b, Q):                               # a, b: (iters,), Q: (iters, d)
        T = jnp.diag(a) + jnp.diag(b[:-1], 1) + jnp.diag(b[:-1], -1)
        evals, evecs = linalg.eigh(T)
        return evals[-1], matmul(evecs[:, -1], Q)

    return jax.lax.map(lambda args: ritz(*args), (alphas.T, betas.T, jnp.swapaxes(basis, 0, 1)))


@functools.partial(jax.jit, static_argnames=("iters",))
def cluster_spectra(psi, log_mass, x, beta, v0=None, iters: int = 0, only=None):
    """(λ_max(C_a) (k,), top eigenvector v_a (k, d)) for the clusters ``only`` (k,) (default all m)
    at (ψ, γ, β).

    ``iters`` = 0: from eigh of each d × d matrix C_a; else from ``iters`` Lanczos steps on the
    product C_a v started from ``v0`` (k, d) (the previous directions, so that few steps serve)."""
    w = _cluster_weights(psi, log_mass, x, beta)
    if only is not None:
        psi, w = psi[only], w[:, only]
    if iters == 0:
        return _dense_spectra(psi, w, x)
    return _lanczos_spectra(psi, w, x, v0, iters)


class ReducedFixedPoint(NamedTuple):
    """Fixed points of the reduced map for B values of β: ``psi`` (B, m, d), ``log_mass``
    (B, m) normalised, ``steps`` (B,) the reduced steps taken (map evaluations), ``residual``
    (B,) the last plain step's ‖Δψ‖_F + ‖Δγ‖_1, ``converged`` (B,) residual < tol."""

    psi: jax.Array
    log_mass: jax.Array
    steps: jax.Array
    residual: jax.Array
    converged: jax.Array


def default_tol(x) -> float:
    """1e-12 (float64) or 1e-5 (float32) × the data's RMS spread √tr Cov."""
    import numpy as np

    from vaefp_jax.clusters import rms_spread

    return (1e-12 if np.asarray(x).dtype == np.float64 else 1e-5) * max(rms_spread(x), np.finfo(np.float64).tiny)


def solve_reduced(x, betas, psi0, log_mass0, *, free_masses: bool = True, tol: float | None = None,
                  max_steps: int = 100_000, accelerate: bool = True, chunk: int | None = 16384) -> ReducedFixedPoint:
    """The reduced fixed point from (ψ⁰ (m, d), log γ⁰ (m,)) for every β of ``betas`` (B,), ``vmap``-ed
    over β: SQUAREM-extrapolated steps (``accelerate``, :class:`Squarem`) or plain steps (EM,
    :class:`PlainEM`), each driven by the engine's one loop (:mod:`vaefp_jax.engine.loop`).
    ``tol`` on a plain step's ‖Δψ‖_F + ‖Δγ‖_1 (default :func:`default_tol`); ``max_steps``
    bounds the map evaluations; ``chunk``: points per block of the sums (None: one block)."""
    x = jnp.asarray(x)
    dtype = x.dtype
    betas = jnp.asarray(betas, dtype)
    psi0, log_mass0 = jnp.asarray(psi0, dtype), jnp.asarray(log_mass0, dtype)
    if free_masses:
        log_mass0 = _normalised(log_mass0)
    tol = default_tol(x) if tol is None else float(tol)
    iteration = (Squarem if accelerate else PlainEM)(tol=tol, max_steps=int(max_steps))
    return _solve(x, betas, psi0, log_mass0, iteration, bool(free_masses), None if chunk is None else int(chunk))


def _residual(psi, lm, new_psi, new_lm):
    return jnp.sqrt(jnp.sum((new_psi - psi) ** 2)) + jnp.sum(jnp.abs(jnp.exp(new_lm) - jnp.exp(lm)))


@dataclasses.dataclass(frozen=True)
class ReducedProblem:
    """One β of the reduced model: data x (n, d), ``beta``, free or fixed masses, blocks of ``chunk``."""

    x: jax.Array
    beta: jax.Array
    free_masses: bool
    chunk: int | None

    def step(self, psi, log_mass):
        """(ψ', log γ', L(ψ, γ)): :func:`reduced_step` and the log likelihood of its input."""
        return _step(psi, log_mass, self.x, self.beta, self.free_masses, self.chunk)


class ReducedCarry(NamedTuple):
    """ψ (m, d), log γ (m,), map evaluations, the last plain step's residual, SQUAREM's α_max."""

    psi: jax.Array
    log_mass: jax.Array
    steps: jax.Array
    residual: jax.Array
    alpha_max: jax.Array


@dataclasses.dataclass(frozen=True)
class PlainEM:
    """Plain reduced steps (EM) until the residual is below ``tol`` or ``max_steps`` evaluations."""

    tol: float
    max_steps: int
    branches = False

    @property
    def step_limit(self) -> int:
        return self.max_steps

    def init(self, problem, psi0, log_mass0, key=None) -> ReducedCarry:
        dtype = psi0.dtype
        return ReducedCarry(psi0, log_mass0, jnp.int32(0), jnp.asarray(jnp.inf, dtype), jnp.asarray(1.0, dtype))

    def step(self, problem, c: ReducedCarry) -> ReducedCarry:
        p1, l1, _ = problem.step(c.psi, c.log_mass)
        return c._replace(psi=p1, log_mass=l1, steps=c.steps + 1, residual=_residual(c.psi, c.log_mass, p1, l1))

    def terminate(self, problem, c: ReducedCarry) -> jax.Array:
        return (c.residual < self.tol) | (c.steps >= self.max_steps)

    def postprocess(self, problem, c: ReducedCarry) -> ReducedFixedPoint:
        return ReducedFixedPoint(psi=c.psi, log_mass=c.log_mass, steps=c.steps, residual=c.residual,
                                 converged=c.residual < self.tol)


@dataclasses.dataclass(frozen=True)
class Squarem(PlainEM):
    """SQUAREM cycles (module docstring): two plain steps, the extrapolation, a stabilising step;
    the extrapolation kept only where it does not lower the log likelihood."""

    def step(self, problem, c: ReducedCarry) -> ReducedCarry:
        psi, lm, amax = c.psi, c.log_mass, c.alpha_max
        eps = 64 * jnp.finfo(psi.dtype).eps
        p1, l1, _ = problem.step(psi, lm)
        res = _residual(psi, lm, p1, l1)
        p2, l2, ll1 = problem.step(p1, l1)
        rp, rl = p1 - psi, l1 - lm
        vp, vl = p2 - 2 * p1 + psi, l2 - 2 * l1 + lm
        rn = jnp.sqrt(jnp.sum(rp * rp) + jnp.sum(rl * rl))
        vn = jnp.sqrt(jnp.sum(vp * vp) + jnp.sum(vl * vl))
        alpha = jnp.clip(-rn / jnp.where(vn > 0, vn, 1.0), -amax, -1.0)
        pe, le = psi - 2 * alpha * rp + alpha**2 * vp, lm - 2 * alpha * rl + alpha**2 * vl
        p3, l3, lle = problem.step(pe, le)
        ok = jnp.isfinite(lle) & (lle >= ll1 - eps * (jnp.abs(ll1) + problem.x.shape[0])) & jnp.all(jnp.isfinite(p3))
        done = res < self.tol                          # converged on the first step: keep θ₁
        new_psi = jnp.where(done, p1, jnp.where(ok, p3, p2))
        new_lm = jnp.where(done, l1, jnp.where(ok, l3, l2))
        amax = jnp.where(ok, jnp.where(alpha <= -amax, 4.0 * amax, amax), jnp.maximum(1.0, amax / 4.0))
        return ReducedCarry(new_psi, new_lm, c.steps + jnp.where(done, 1, 3), res, amax)


@functools.partial(jax.jit, static_argnames=("iteration", "free_masses", "chunk"))
def _solve(x, betas, psi0, log_mass0, iteration, free_masses, chunk):
    def one(beta):
        problem = ReducedProblem(x, beta, free_masses, chunk)
        return loop.run(iteration, problem, iteration.init(problem, psi0, log_mass0))

    return jax.vmap(one)(betas)
