"""Each step map's Jacobian operator (StepMap.jacobian), against a NumPy float64 reference;
the refinement of β_c through every map; and the blocked map's Jacobian programs, read from
their compiled buffers: no array of K × n elements (let alone K × n × d) anywhere."""

from __future__ import annotations

import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import operators

sys.path.insert(0, os.path.dirname(__file__))
import registry  # noqa: E402


def _fd_jacobian(psi, x, beta, lp, h=1e-6):
    """∂F/∂ψ of the float64 NumPy reference map by central differences, (K d, K d): truncation
    ~h² ‖F‴‖, rounding ~eps ‖F‖/h ≈ 1e-10."""
    K, d = psi.shape
    J = np.zeros((K * d, K * d))
    for j in range(K * d):
        e = np.zeros(K * d)
        e[j] = h
        plus = registry.ref_map(psi + e.reshape(K, d), x, beta, lp)[0]
        minus = registry.ref_map(psi - e.reshape(K, d), x, beta, lp)[0]
        J[:, j] = ((plus - minus) / (2 * h)).ravel()
    return J


@pytest.mark.parametrize("name", sorted(registry.MAPS))
def test_jacobian_operator_against_finite_differences(name, x64):
    step_map = registry.MAPS[name]
    x, grid, _ = registry.problem()
    beta = 0.02
    rng = np.random.default_rng(3)
    psi = 0.6 * grid.z + 0.05 * rng.normal(size=grid.z.shape)   # not a fixed point
    lp = grid.log_prior
    J = _fd_jacobian(psi, x, beta, lp)
    op = step_map.jacobian(jnp.asarray(psi), jnp.asarray(x), beta, jnp.asarray(lp))
    scale = np.abs(J).max()
    for _ in range(2):
        v = rng.normal(size=psi.shape)
        np.testing.assert_allclose(np.asarray(op.mv(jnp.asarray(v))).ravel(), J @ v.ravel(), atol=1e-7 * scale)
        np.testing.assert_allclose(np.asarray(op.rmv(jnp.asarray(v))).ravel(), J.T @ v.ravel(), atol=1e-7 * scale)
    # s_a = Σ_i q_ia (the Lanczos scaling), against the reference's aggregate posterior × n
    np.testing.assert_allclose(np.asarray(op.tile_mass), registry.ref_map(psi, x, beta, lp)[1] * x.shape[0],
                               rtol=1e-10, atol=1e-12)
    assert (op.factors is not None) == step_map.factored
    # the solves on the operator: (I − J) v = r by every solve the operator allows
    r = rng.normal(size=psi.shape)
    exact = np.linalg.solve(np.eye(J.shape[0]) - J, r.ravel())
    for solve in ("woodbury", "krylov", "dense") if step_map.factored else ("krylov", "dense"):
        v = operators.NEWTON_SOLVES[solve](op, jnp.asarray(r))
        tol = 1e-4 if solve == "krylov" else 1e-7    # GMRES stops at a relative residual of 1e-6
        np.testing.assert_allclose(np.asarray(v).ravel(), exact, atol=tol * np.abs(exact).max())
    if not step_map.factored:
        with pytest.raises(ValueError, match="Woodbury"):
            operators.woodbury_solve(op, jnp.asarray(r))


@pytest.mark.parametrize("name", sorted(registry.MAPS))
def test_refinement_follows_every_map(name, x64):
    """The collapse of a Gaussian blob: the merged branch loses stability exactly at
    β_c = λ_max of the data's covariance, whichever map the Newton steps and ρ come from."""
    x = vf.datasets.gaussian_blob(40, seed=2)
    lam = float(np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1])
    grid = vf.LatentGrid.uniform(3)
    collapsed = np.broadcast_to(x.mean(0), (grid.num_tiles, 2))
    beta_c, rho = vf.phase.refine_bracket(x, grid, 0.8 * lam, 1.2 * lam, collapsed, iterations=26,
                                          step_map=registry.MAPS[name])
    # 26 halvings of a bracket of ln(1.5) in ln β: ~6e-9 relative
    assert beta_c == pytest.approx(lam, rel=2e-8)
    assert rho < 1 and rho == pytest.approx(lam / beta_c, rel=1e-6)


def test_woodbury_refuses_a_map_without_factors(x64):
    x, grid, betas = registry.problem()
    with pytest.raises(ValueError, match="Woodbury factors"):
        vf.solve(x, betas, grid, iteration=vf.Accelerated(newton_solve="woodbury"), step_map=vf.BlockedMap())
    with pytest.raises(ValueError, match="Woodbury"):
        vf.Woodbury(vf.BlockedMap())
    with pytest.raises(ValueError, match="Woodbury"):
        vf.phase.refine_bracket(x, grid, 0.01, 0.02, grid.z, newton_solve="woodbury", step_map=vf.BlockedMap())


def _largest_buffer(compiled_text: str) -> int:
    """Elements of the largest array in a compiled HLO module's text (every shape it names)."""
    sizes = [int(np.prod([int(s) for s in dims.split(",") if s])) if dims else 1
             for dims in re.findall(r"\b(?:f|s|u|pred|bf)\d*\[([\d,]*)\]", compiled_text)]
    return max(sizes)


def test_blocked_map_jacobian_programs_hold_no_tile_by_point_array(x64):
    """Accelerated's Newton steps and certificate, the implicit u′ and u″, ρ and the branch
    Newton of the refinement, compiled for the blocked map: the largest buffer of each is far
    below K × n (and so below the K × n × d of the dense factors)."""
    n, side = 400, 6                 # d = 2: K n d = 28,800, K n = 14,400; GMRES's basis (K d)² = 5,184
    x = jnp.asarray(vf.datasets.three_clusters(n, seed=1))
    grid = vf.LatentGrid.uniform(side)
    K = grid.num_tiles
    blocked = vf.BlockedMap(tile_chunk=8, data_chunk=16)
    lp, psi = jnp.asarray(grid.log_prior), jnp.asarray(grid.z)
    limit = K * n

    solve = jax.jit(lambda xx: vf.solve(xx, [0.01], grid, iteration=vf.Accelerated(spectral_iters=24),
                                        step_map=blocked, throw=False).psi)
    u = lambda b: vf.phase.order_parameter_at_fixed_point(b, x, lp, psi, step_map=blocked)
    d2u = jax.jit(lambda b: jax.jvp(lambda c: jax.jvp(u, (c,), (1.0,))[1], (b,), (1.0,))[1])
    rho = jax.jit(lambda p: operators.lanczos(blocked.jacobian(p, x, 0.01, lp), p, 24)[0])
    newton = vf.Newton(max_steps=4, spectral_iters=24)
    branch = jax.jit(lambda p: vf.solve(x, [0.01], grid, iteration=newton, step_map=blocked, psi0=p, throw=False).psi)
    programs = {"solve": solve.lower(x), "u''": d2u.lower(0.01), "rho": rho.lower(psi), "refinement": branch.lower(psi)}
    # the same programs with the dense map do hold (K, n) arrays: the check can fail
    dense = jax.jit(lambda p: operators.lanczos(vf.DenseMap().jacobian(p, x, 0.01, lp), p, 24)[0])
    assert _largest_buffer(dense.lower(psi).compile().as_text()) >= limit
    for name, lowered in programs.items():
        largest = _largest_buffer(lowered.compile().as_text())
        assert largest < limit, (name, largest, limit)
