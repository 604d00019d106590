"""Pool and Vmapped schedules give the same fixed points and step counts."""

import dataclasses

import numpy as np
import pytest

import vaefp_jax as vf


def _assert_same_sweep(a, b):
    """Same step counts and convergence flags, same fixed points and residuals."""
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.converged, b.converged)
    np.testing.assert_allclose(a.psi, b.psi, atol=1e-12)
    np.testing.assert_allclose(a.residual, b.residual, rtol=1e-9)


def _capped(max_steps):
    return dataclasses.replace(vf.Damped.paper(), max_steps=max_steps)


def test_vmapped_chunks_equal_one_vmap(x64):
    # Vmapped(batch_size < B) maps chunks of vmapped problems (lax.map); the results
    # are those of one vmap over all β.
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 11)
    vmapped = vf.solve(x, betas, grid, schedule=vf.Vmapped(batch_size=len(betas)), throw=False)
    for chunk in (1, 7, 1000):  # 1000 > B: clipped to B
        _assert_same_sweep(vf.solve(x, betas, grid, schedule=vf.Vmapped(batch_size=chunk), throw=False), vmapped)
    capped = vf.solve(x, betas, grid, schedule=vf.Vmapped(batch_size=3), iteration=_capped(5), throw=False)
    np.testing.assert_array_equal(capped.steps, np.minimum(vmapped.steps, 5))


def test_schedules_reject_bad_options():
    x = vf.datasets.three_clusters(12)
    grid = vf.LatentGrid.uniform(3)
    with pytest.raises(TypeError, match="schedule"):
        vf.solve(x, [0.1], grid, schedule="eager")
    with pytest.raises(ValueError, match="record_every"):
        vf.solve(x, [0.1], grid, schedule=vf.Pool(), record_every=2)
    with pytest.raises(ValueError, match="width"):
        vf.Pool(width=0)
    with pytest.raises(ValueError, match="batch_size"):
        vf.Vmapped(batch_size=0)


def test_pool_schedule_equals_vmapped(x64):
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(6)
    betas = np.geomspace(1e-3, 1.0, 11)
    vmapped = vf.solve(x, betas, grid, schedule=vf.Vmapped(), throw=False)
    assert len(set(np.asarray(vmapped.steps).tolist())) > 3  # slots really get refilled at different times
    for width in (1, 3, 11, 64):  # 64 > B: clipped to B
        _assert_same_sweep(vf.solve(x, betas, grid, schedule=vf.Pool(width=width), throw=False), vmapped)
    capped = vf.solve(x, betas, grid, schedule=vf.Pool(width=4), iteration=_capped(5), throw=False)
    np.testing.assert_array_equal(capped.steps, np.minimum(vmapped.steps, 5))
    assert not np.any(capped.converged & (np.asarray(vmapped.steps) > 5))


def test_pool_schedule_per_beta_initial_psi(x64):
    # One ψ^0 per β: each slot must start from its own β's ψ^0 when refilled.
    x = vf.datasets.three_clusters(30, seed=3)
    grid = vf.LatentGrid.uniform(5)
    betas = np.geomspace(1e-2, 1.0, 7)
    rng = np.random.default_rng(0)
    psi0 = rng.normal(size=(7, grid.num_tiles, 2))
    vmapped = vf.solve(x, betas, grid, psi0=psi0, schedule=vf.Vmapped(), throw=False)
    pool = vf.solve(x, betas, grid, psi0=psi0, schedule=vf.Pool(width=2), throw=False)
    np.testing.assert_array_equal(pool.steps, vmapped.steps)
    np.testing.assert_allclose(pool.psi, vmapped.psi, atol=1e-12)


def test_default_schedule_is_pool_without_trajectories(x64):
    from vaefp_jax.engine.schedules import default_schedule

    x = vf.datasets.three_clusters(20, seed=1)
    grid = vf.LatentGrid.uniform(4)
    betas = np.geomspace(1e-2, 1.0, 5)
    assert isinstance(default_schedule(vf.Damped.paper(), vf.Unconstrained(), 0), vf.Pool)
    assert isinstance(default_schedule(vf.Damped.paper(), vf.Unconstrained(), 3), vf.Vmapped)
    auto = vf.solve(x, betas, grid, throw=False)
    recorded = vf.solve(x, betas, grid, record_every=3, throw=False)  # needs the vmapped loop
    np.testing.assert_array_equal(auto.steps, recorded.steps)
    np.testing.assert_allclose(auto.psi, recorded.psi, atol=1e-12)
    assert recorded.trajectory is not None and auto.trajectory is None
    with pytest.raises(ValueError, match="record_every"):
        vf.solve(x, betas, grid, schedule=vf.Pool(), record_every=2)


@pytest.mark.parametrize("order", ["cooling", "heating"])
def test_continuation_schedule_is_a_chain_of_one_beta_solves(order, x64):
    """Continuation(kick=0) is, β by β, the solve of that β alone from the previous β's answer
    (in the order's direction), returned in the order of ``betas``; ``sweep(continuation=)`` is
    that schedule plus the derivatives."""
    x = vf.datasets.three_clusters(40, seed=5)
    grid = vf.LatentGrid.uniform(4)
    betas = np.array([0.02, 0.3, 0.005, 0.08])                     # not sorted: the order is the schedule's
    it = vf.Damped.tight()
    chain = vf.solve(x, betas, grid, iteration=it, schedule=vf.Continuation(order, kick=0.0))
    visit = np.argsort(betas)[::-1] if order == "cooling" else np.argsort(betas)
    first = vf.solve(x, betas[visit[:1]], grid, iteration=it)        # the first β from the grid's start
    psi = first.psi[0]
    np.testing.assert_allclose(chain.psi[visit[0]], psi, atol=1e-12)
    for j in visit[1:]:
        psi = vf.solve(x, betas[j:j + 1], grid, iteration=it, psi0=psi).psi[0]
        np.testing.assert_allclose(chain.psi[j], psi, atol=1e-12)
    swept = vf.sweep(x, betas, grid, iteration=it, continuation=order, kick=0.0, spectral_iters=0)
    np.testing.assert_allclose(swept.psi, chain.psi, atol=1e-12)
    with pytest.raises(ValueError, match="record_every"):
        vf.solve(x, betas, grid, schedule=vf.Continuation(order), record_every=2)
    with pytest.raises(ValueError, match="one psi0"):
        vf.solve(x, betas, grid, schedule=vf.Continuation(order), psi0=np.stack([grid.z] * len(betas)))
    with pytest.raises(ValueError, match="cooling"):
        vf.Continuation("sideways")
