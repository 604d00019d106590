"""vaefp_jax.linalg: the one place that calls LAPACK. Values against NumPy, and
the property that prevents the XLA:CPU deadlock (docs/xla_cpu_hang.md): in the
CPU lowering of the package's solvers, vmapped and differentiated, no LAPACK
custom call has a batch dimension."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vaefp_jax import constraints, equations, implicit, linalg, operators, phase, tile_jacobian
from vaefp_jax.grid import LatentGrid

LAPACK_CALL = re.compile(r"custom_call @(lapack_\w+)\(.*?num_batch_dims = \"(\d+)\"")


def lapack_batch_dims(fn, *args) -> dict[str, set[int]]:
    """{LAPACK kernel: batch dimensions seen} in the CPU lowering of jit(fn)(*args)."""
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cpu",)).as_text()
    seen: dict[str, set[int]] = {}
    for name, nb in LAPACK_CALL.findall(text):
        seen.setdefault(name, set()).add(int(nb))
    assert ("lapack_" in text) == bool(seen), "a LAPACK call whose batch dimensions could not be read"
    return seen


def assert_unbatched(seen):
    assert seen, "expected LAPACK calls in this lowering (the check would be vacuous)"
    batched = {k: v for k, v in seen.items() if v != {0}}
    assert not batched, f"batched LAPACK calls on CPU: {batched}"


@pytest.mark.parametrize("m", [1, 2, 5, 8, 9, 13, 40])
def test_solve_matches_numpy_batched_and_vmapped(m, x64):
    rng = np.random.default_rng(m)
    a = rng.normal(size=(3, 4, m, m)) + 0.5 * m * np.eye(m)
    a[0, 0] = np.eye(m)[::-1]  # needs row exchanges
    b = rng.normal(size=(3, 4, m, 2))
    ref = np.linalg.solve(a, b)
    # backward-stable LU: error ≲ cond · eps · |x| (a factor 1e3 for the constants)
    tol = 1e3 * np.max(np.linalg.cond(a)) * np.finfo(float).eps * np.max(np.abs(ref))
    np.testing.assert_allclose(np.asarray(linalg.solve(a, b)), ref, atol=tol)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(jax.vmap(linalg.solve)))(a, b)), ref, atol=tol)
    np.testing.assert_allclose(np.asarray(linalg.solve(a[0, 0], b[0, 0, :, 0])), ref[0, 0, :, 0], atol=tol)


@pytest.mark.parametrize("m", [3, 13])
def test_solve_spd_and_eigh_match_numpy(m, x64):
    rng = np.random.default_rng(m)
    g = rng.normal(size=(5, m, m))
    s = g @ np.swapaxes(g, -1, -2) + 0.1 * np.eye(m)
    s[1] *= 1e6  # the scaling of a row does not matter to the Jacobi-scaled Cholesky
    b = rng.normal(size=(5, m))
    ref = np.linalg.solve(s, b[..., None])[..., 0]
    tol = 1e2 * np.max(np.linalg.cond(s)) * np.finfo(float).eps * np.max(np.abs(ref), axis=-1, keepdims=True)
    assert np.all(np.abs(np.asarray(jax.vmap(linalg.solve_spd)(s, b)) - ref) <= tol)
    w, v = jax.vmap(linalg.eigh)(s)
    np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(s), rtol=1e-11, atol=1e-11 * np.abs(s).max())
    np.testing.assert_allclose(np.asarray(v @ (w[..., None] * np.swapaxes(v, -1, -2))), s,
                               atol=1e-11 * np.abs(s).max())


@pytest.mark.parametrize("m", [12])
def test_solve_is_differentiable_to_second_order(m, x64):
    """grad and hessian of ‖a⁻¹ b‖² in a and b against central differences."""
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(m, m)) + m * np.eye(m))
    b = jnp.asarray(rng.normal(size=(m,)))
    f = lambda a, b: jnp.sum(linalg.solve(a, b) ** 2)
    ref = lambda a, b: float(np.sum(np.linalg.solve(np.asarray(a), np.asarray(b)) ** 2))
    ga, gb = jax.grad(f, argnums=(0, 1))(a, b)
    h = 1e-6
    e = np.zeros((m, m))
    e[1, 2] = h
    assert float(ga[1, 2]) == pytest.approx((ref(a + e, b) - ref(a - e, b)) / (2 * h), rel=1e-6)
    eb = np.zeros(m)
    eb[0] = h
    assert float(gb[0]) == pytest.approx((ref(a, b + eb) - ref(a, b - eb)) / (2 * h), rel=1e-6)
    # the second derivative in b is 2 a⁻ᵀ a⁻¹ exactly
    hb = np.asarray(jax.hessian(f, argnums=1)(a, b))
    ainv = np.linalg.inv(np.asarray(a))
    np.testing.assert_allclose(hb, 2 * ainv.T @ ainv, rtol=1e-10, atol=1e-12)


def test_solve_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(\.\.\., m, m\)"):
        linalg.solve(jnp.ones((3, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match="b must have shape"):
        linalg.solve(jnp.ones((3, 3)), jnp.ones(4))


def test_no_batched_lapack_call_in_the_cpu_lowering_of_the_solvers(x64):
    """The mechanism of docs/xla_cpu_hang.md, checked on the lowered programs:
    vmapped and differentiated uses of every LAPACK-reaching path."""
    rng = np.random.default_rng(0)
    n, d, K, B = 30, 13, 9, 3
    x = jnp.asarray(rng.normal(size=(n, d)))
    psi = jnp.asarray(rng.normal(size=(B, K, d)))
    lp = jnp.full((K,), -np.log(K))
    betas = jnp.asarray([0.5, 1.0, 2.0])

    def woodbury(psi, beta):  # per-tile (d, d) solves with d > 8 and the (n, n) capacity solve
        return tile_jacobian.woodbury_solve_factors(tile_jacobian.jacobian_factors(psi, x, beta, lp), psi)

    assert_unbatched(lapack_batch_dims(jax.vmap(woodbury), psi, betas))
    assert_unbatched(lapack_batch_dims(jax.vmap(jax.jacfwd(woodbury, argnums=1)), psi, betas))
    # u'' through the implicit function, vmapped over β (the derivative pass of sweep)
    u = lambda b, p: phase.order_parameter_at_fixed_point(b, x, lp, p)
    assert_unbatched(lapack_batch_dims(jax.vmap(jax.hessian(u)), betas, psi))
    assert_unbatched(lapack_batch_dims(jax.vmap(jax.grad(u)), betas, psi))
    # the dense (K d)² solve of implicit differentiation
    theta = {"x": x, "beta": betas[0], "log_prior": lp}
    tile_map = lambda p, th: equations.step(p, th["x"], th["beta"], th["log_prior"])
    dense = lambda p: implicit.Dense()(None, p, tile_map, p, theta)
    assert_unbatched(lapack_batch_dims(jax.vmap(dense), psi))
    # Lanczos' tridiagonal eigenproblem
    lanczos = lambda p, b: operators.lanczos(tile_jacobian.jacobian_factors(p, x, b, lp), p, 12)[0]
    assert_unbatched(lapack_batch_dims(jax.vmap(lanczos), psi, betas))
    # the Lipschitz projection (K × K) and the barrier's SPD Newton systems
    grid = LatentGrid.uniform(3)
    C = jnp.asarray(constraints.lipschitz_coefficients(grid, 1.0))
    W = jnp.ones((K, K)) - jnp.eye(K)
    sbar = jnp.full((K,), 1.0 / K)
    assert_unbatched(lapack_batch_dims(jax.vmap(lambda p: constraints.project(p, sbar, W * C)), psi))
    assert_unbatched(lapack_batch_dims(jax.vmap(lambda a, r: linalg.solve_spd(a, r)),
                                       jnp.broadcast_to(jnp.eye(20), (B, 20, 20)), jnp.ones((B, 20))))


def test_gpu_lowering_keeps_batched_kernels(x64):
    """On GPU the platform switch keeps the native batched solve (checked by
    lowering for CUDA without a GPU)."""
    a = jnp.broadcast_to(jnp.eye(13), (4, 13, 13))
    b = jnp.ones((4, 13))
    text = jax.jit(jax.vmap(linalg.solve)).trace(a, b).lower(lowering_platforms=("cuda",)).as_text()
    calls = set(re.findall(r"custom_call @(\w+)", text))
    assert not any(c.startswith("lapack_") for c in calls), calls
    assert any(re.search(r"getrf.*batched|batched.*getrf", c) for c in calls) or \
        any(c.startswith("cu_lu") or "getrf" in c for c in calls), calls
