"""The conditional RealNVP encoder gives an exact, normalised log q(z|x)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vaefp_jax.vae.flow import ConditionalRealNVP, standard_normal_log_prob

DATA_DIM = 5


def _perturbed_flow(seed=0, couplings=4, scale=0.4, bound=1.0):
    """A flow whose zero-initialised coupling outputs are randomised, so it is far from the identity."""
    flow = ConditionalRealNVP(DATA_DIM, 2, hidden=16, depth=1, embedding_dim=4, num_couplings=couplings,
                              coupling_hidden=16, coupling_depth=2, log_scale_bound=bound,
                              rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(flow)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


@pytest.fixture(scope="module")
def flow():
    return _perturbed_flow()


@pytest.fixture(scope="module")
def x():
    return jax.random.uniform(jax.random.key(1), (3, DATA_DIM))


def test_identity_at_initialisation():
    flow = ConditionalRealNVP(DATA_DIM, 2, 16, 1, 4, 3, 16, 2, 2.0, rngs=nnx.Rngs(0))
    xi = jnp.linspace(0, 1, DATA_DIM)
    z = jax.random.normal(jax.random.key(0), (50, 2))
    ctx = flow.condition(xi)
    base = standard_normal_log_prob((z - ctx.mean) * jnp.exp(-ctx.log_scale)) - ctx.log_scale.sum()
    np.testing.assert_allclose(flow.log_prob(z, xi), base, rtol=1e-6, atol=1e-6)


def test_forward_and_inverse_log_q_agree(flow, x):
    z, log_q_fwd = flow.sample_and_log_prob(jax.random.key(2), x, 200)  # (3, 200, 2), (3, 200)
    assert z.shape == (3, 200, 2) and log_q_fwd.shape == (3, 200)
    log_q_inv = flow.log_prob(z, x)
    # float32 round trip through 4 couplings: agreement to ~1e-5 relative.
    np.testing.assert_allclose(log_q_inv, log_q_fwd, rtol=1e-4, atol=1e-4)
    # The log-density varies by several nats over the samples, so agreement is not trivial.
    assert float(jnp.std(log_q_fwd)) > 0.3


def test_inverse_undoes_forward(flow, x):
    ctx = flow.condition(x[0])
    z0 = jax.random.normal(jax.random.key(3), (100, 2))
    z, ld_fwd = flow.flow_forward(z0, ctx.embedding)
    back, ld_inv = flow.flow_inverse(z, ctx.embedding)
    np.testing.assert_allclose(back, z0, atol=1e-4)
    np.testing.assert_allclose(ld_inv, ld_fwd, atol=1e-4)
    assert float(jnp.max(jnp.abs(z - z0))) > 0.1  # the flow is not the identity


def test_log_q_matches_jacfwd_log_det(flow, x):
    """log q(T(ε)) = log N(ε) − log|det ∂T/∂ε| with T(ε) = flow(μ + e^s ε), Jacobian by jax.jacfwd."""
    xi = x[1]
    ctx = flow.condition(xi)

    def T(eps):
        z, _ = flow.flow_forward(ctx.mean + jnp.exp(ctx.log_scale) * eps, ctx.embedding)
        return z

    eps = jax.random.normal(jax.random.key(4), (64, 2))
    jac = jax.vmap(jax.jacfwd(T))(eps)  # (64, 2, 2)
    brute = standard_normal_log_prob(eps) - jnp.log(jnp.abs(jnp.linalg.det(jac)))
    z = jax.vmap(T)(eps)
    np.testing.assert_allclose(flow.log_prob(z, xi), brute, rtol=1e-4, atol=1e-4)


def test_density_integrates_to_one(flow, x):
    """Midpoint quadrature of q(z|x) on a fine grid over a box that holds all its mass.

    The box is 1.5× the range of 20,000 samples (so the mass outside is < 1e-4 with
    overwhelming probability); with h ≤ box/1200 and a density whose smallest length
    scale is ≳ 0.05 here, the midpoint rule's relative error is ~h²/(24·0.05²) < 1e-3.
    Tolerance 5e-3 leaves room for float32 summation; a wrong log-det (e.g. a
    missing coupling term) is off by far more.
    """
    xi = x[2]
    z, _ = flow.sample_and_log_prob(jax.random.key(5), xi, 20_000)
    lo, hi = np.asarray(z.min(axis=0)), np.asarray(z.max(axis=0))
    centre, half = (lo + hi) / 2, 0.75 * (hi - lo)
    g = 1200
    axes = [centre[k] - half[k] + (np.arange(g) + 0.5) * (2 * half[k] / g) for k in range(2)]
    z1, z2 = np.meshgrid(*axes, indexing="ij")
    grid = jnp.asarray(np.stack([z1.ravel(), z2.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(jax.jit(flow.log_prob)(grid, xi), np.float64))
    total = dens.sum() * (2 * half[0] / g) * (2 * half[1] / g)
    assert abs(total - 1.0) < 5e-3, total
    # The quadrature resolves the density: it is far from a flat blob on this box.
    assert dens.max() * (2 * half[0]) * (2 * half[1]) > 5
