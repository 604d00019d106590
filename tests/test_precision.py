"""The precision policy (vaefp_jax.precision), checked on a machine without a GPU.

On an NVIDIA GPU, JAX runs a float32 matrix product that does not ask for
``Precision.HIGHEST`` in TF32 (~1e-3 relative error); on CPU the precision changes
nothing, so a product that forgets it passes every numerical test here and is wrong
only on a GPU. These tests look at the request instead of the numbers:

* every ``dot_general`` *bound* while the public entry points run on float32 data with
  d = 100 (the matrix-product distances) is recorded, by shadowing the primitive's
  ``bind`` with an instance attribute, and must carry precision (HIGHEST, HIGHEST); a
  failure names the source line (the innermost frame in vaefp_jax, the wrappers of
  precision.py skipped). JAX caches traced functions, so the caches are cleared before
  recording; the inlined ``jnp.matmul`` of a given shape and precision is traced once
  and reused, so where several sites share one, the first is named.
* a walker over ``jax.make_jaxpr`` (into the jaxprs of while, cond, scan, pjit,
  custom_jvp_call, custom_vjp_call, custom_linear_solve, … equations) sees every product
  of a traceable computation, cached or not;
* the program lowered for the "cuda" platform (possible without a GPU) states
  ``precision = [HIGHEST, HIGHEST]`` on every ``stablehlo.dot_general``.

Each of the three is shown to catch a product without the precision (the mutation tests).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.lax import lax as _lax  # dot_general_p: the primitive every matrix product binds

import vaefp_jax as vf
from vaefp_jax import equations, native, operators, precision, propositions, tile_jacobian
from vaefp_jax.mnist import Exemplars
from vaefp_jax.vae.config import VAEConfig
from vaefp_jax.vae.model import build_vae
from vaefp_jax.vae.tiling import tiling_metrics
from vaefp_jax.vae.trained import TrainedVAE

pytestmark = pytest.mark.xdist_group("precision")  # one worker builds the module fixture

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
PACKAGE = os.path.dirname(os.path.abspath(vf.__file__)) + os.sep
WRAPPERS = os.path.abspath(precision.__file__)
JAX_DIR = os.path.dirname(os.path.abspath(jax.__file__)) + os.sep

D = 100  # > equations.DIRECT_MAX_D: the distances are matrix products
RNG = np.random.default_rng(0)
X = np.concatenate([RNG.normal(c, 0.3, (6, D)) for c in (-1.0, 0.0, 1.0)]).astype(np.float32)  # (18, 100)
BETAS = np.array([0.5, 2.0, 20.0], np.float32)
GRID = vf.LatentGrid.uniform(2)


# --------------------------------------------------------------------------- recorders


def _site(frame) -> str:
    """'path:line (function)' of the innermost frame in vaefp_jax that is not a wrapper of
    precision.py, else of the innermost frame outside JAX (a test's own product)."""
    outside = None
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(PACKAGE) and name != WRAPPERS:
            return f"vaefp_jax/{os.path.relpath(name, PACKAGE)}:{frame.f_lineno} ({frame.f_code.co_name})"
        if outside is None and not name.startswith(JAX_DIR) and "contextlib" not in name:
            outside = f"{os.path.basename(name)}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return outside or "?"


@contextlib.contextmanager
def recording():
    """Yields a list that receives (precision, site) for every dot_general bound inside
    the block. JAX's caches are cleared first, so that functions traced before are traced
    (and their products bound) again."""
    prim = _lax.dot_general_p
    assert "bind" not in vars(prim), "dot_general_p.bind is already shadowed"
    found = []
    bind = prim.bind

    def recording_bind(*args, **params):
        found.append((params.get("precision"), _site(sys._getframe(1))))
        return bind(*args, **params)

    jax.clear_caches()
    prim.bind = recording_bind  # an instance attribute shadows Primitive.bind
    try:
        yield found
    finally:
        del prim.bind


def _eqn_site(eqn) -> str:
    from jax._src import source_info_util
    for f in source_info_util.user_frames(eqn.source_info.traceback):
        if f.file_name.startswith(PACKAGE) and os.path.abspath(f.file_name) != WRAPPERS:
            return f"vaefp_jax/{os.path.relpath(f.file_name, PACKAGE)}:{f.start_line} ({f.function_name})"
        if not f.file_name.startswith(PACKAGE):
            return f"{os.path.basename(f.file_name)}:{f.start_line} ({f.function_name})"
    return "?"


def jaxpr_dots(closed) -> list:
    """(precision, site) of every dot_general of a (Closed)Jaxpr, recursively into the
    jaxprs held in its equations' params (while body/cond, cond branches, scan, pjit,
    custom_jvp_call, custom_vjp_call, custom_linear_solve's tuple, pallas_call)."""
    from jax.extend import core
    out = []

    def visit(v):
        if isinstance(v, core.ClosedJaxpr):
            walk(v.jaxpr)
        elif isinstance(v, core.Jaxpr):
            walk(v)
        elif isinstance(v, (tuple, list)):
            for item in v:
                visit(item)
        elif isinstance(v, dict):
            for item in v.values():
                visit(item)

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is _lax.dot_general_p:
                out.append((eqn.params["precision"], _eqn_site(eqn)))
            for v in eqn.params.values():
                visit(v)

    visit(closed)
    return out


def not_highest(records) -> list[str]:
    """The records whose precision is not (HIGHEST, HIGHEST), one line each."""
    return sorted({f"{site}: precision={prec}" for prec, site in records if prec != HIGHEST})


def _message(bad) -> str:
    return "matrix products not at Precision.HIGHEST (TF32 on an NVIDIA GPU):\n  " + "\n  ".join(bad)


_PRECISION_TEXT = re.compile(r"precision(_config)? = \[(#stablehlo<precision )?HIGHEST>?, "
                             r"(#stablehlo<precision )?HIGHEST>?\]")


def cuda_dots(f, *args) -> list[str]:
    """The dot_general lines of f's program lowered for the "cuda" platform (no GPU needed)."""
    text = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    return [line.strip() for line in text.splitlines() if "dot_general" in line]


def cuda_not_highest(lines) -> list[str]:
    return [line for line in lines if not _PRECISION_TEXT.search(line)]


# --------------------------------------------------------------------------- the runs


def _tiny_vae():
    """An untrained VAE on 4 exemplars of D = 100: the flow's nnx.Linear products."""
    cfg = VAEConfig(encoder_hidden=8, encoder_depth=1, embedding_dim=4, num_couplings=2, coupling_hidden=8,
                    coupling_depth=1, decoder_hidden=8, decoder_depth=1)
    ex = Exemplars(images=RNG.uniform(size=(4, D)).astype(np.float32), labels=np.arange(4, dtype=np.int32),
                   indices=np.arange(4))
    graphdef, params = nnx.split(build_vae(cfg, D))
    return TrainedVAE(graphdef=graphdef, params=params, config=cfg, exemplars=ex)


def _tiling():
    vae = _tiny_vae()
    tiling_metrics(vae.log_q, vae.sample, vae.exemplars.images, jax.random.key(0), num_prior=64, num_posterior=8)


LIP_GRID = vf.LatentGrid.uniform(3)

RUNS = {
    "solve": lambda: vf.solve(X, BETAS, GRID, throw=False),  # the dense map, Damped.paper()
    "solve_blocked": lambda: vf.solve(X, BETAS, GRID, step_map=vf.BlockedMap(), throw=False),
    "solve_accelerated": lambda: vf.solve(X, BETAS, GRID, iteration=vf.Accelerated(), throw=False),
    "solve_lipschitz_strength": lambda: vf.solve(X, BETAS, LIP_GRID, constraint=vf.LipschitzStrength(0.1),
                                                 iteration=vf.Damped.paper(), throw=False),
    # a few steps: each is a barrier Newton solve of size K d = 900 (the products are what is checked)
    "solve_lipschitz_bound": lambda: vf.solve(X, BETAS, LIP_GRID, constraint=vf.LipschitzBound(1.0, r=1.0),
                                              iteration=vf.Damped(max_steps=3), throw=False),
    "sweep": lambda: vf.sweep(X, BETAS, GRID, spectral_iters=20, throw=False),  # Damped.tight(), Woodbury, power
    "sweep_cooling_accelerated": lambda: vf.sweep(X, BETAS, GRID, continuation="cooling",
                                                  iteration=vf.Accelerated(), throw=False),
    "phase_analysis": lambda: vf.phase_analysis(X, grid=GRID, num_betas=3, top_k=1, refine_merges=1),
    "vae_tiling_metrics": _tiling,
}


@pytest.fixture
def float32_only():
    """The programs in float32 whatever another test left JAX's x64 switch at."""
    with jax.enable_x64(False):
        yield


@pytest.fixture(scope="module")
def recorded():
    """{run: [(precision, site)]}, all runs recorded after one clearing of the caches (a
    product traced in an earlier run and reused from the cache is that run's record)."""
    assert jax.config.jax_default_matmul_precision is None, "a default matmul precision would hide the defaults"
    out = {}
    with jax.enable_x64(False), recording() as found:
        for name, run in RUNS.items():
            start = len(found)
            jax.block_until_ready(run())  # (a run's asynchronous work is not timed as the next one's)
            out[name] = found[start:]
    return out


@pytest.mark.parametrize("run", list(RUNS))
def test_every_product_of_the_entry_points_is_highest(recorded, run):
    bad = not_highest(recorded[run])
    assert not bad, _message(bad)


def test_the_runs_reach_the_products(recorded):
    """The runs exercise the package's product sites (so the test above is not vacuous)."""
    records = [r for run in recorded.values() for r in run]
    files = {site.split(":")[0] for _, site in records}
    for f in ("equations.py", "maps/blocked.py", "tile_jacobian.py", "linalg.py", "engine/initial.py",
              "constraints/projection.py", "constraints/barrier.py", "vae/flow.py"):
        assert f"vaefp_jax/{f}" in files, (f, sorted(files))
    assert recorded["vae_tiling_metrics"], "the VAE's products were not recorded"


def test_recorder_catches_a_product_without_precision():
    """Mutation check: a plain jnp.dot (no precision), eager and jitted, is caught and named."""
    a = jnp.ones((3, D), jnp.float32)
    with recording() as found:
        jnp.dot(a, a.T)
        jax.jit(lambda u: u @ u.T)(a)
        precision.matmul(a, a.T)
    bad = not_highest(found)
    assert len(bad) == 2 and all(os.path.basename(__file__) in line for line in bad), bad
    assert found[-1][0] == HIGHEST


def test_recorder_names_a_package_site_that_loses_the_precision(monkeypatch):
    """Mutation check inside the package: equations' products without the policy are caught,
    at their lines in equations.py."""
    psi = X[:4]
    lp = np.asarray(GRID.log_prior, np.float32)
    monkeypatch.setattr(equations, "matmul", jnp.matmul)
    try:
        with recording() as found:
            jax.jit(equations.evaluate)(psi, X, np.float32(1.0), lp)
        walked = jaxpr_dots(jax.make_jaxpr(equations.evaluate)(psi, X, np.float32(1.0), lp))
    finally:
        monkeypatch.undo()
        jax.clear_caches()  # no trace of the mutated module survives this test
    for bad in (not_highest(found), not_highest(walked)):
        for where in ("(squared_distances)", "(tile_weights)", "(_normalised)"):
            assert any(line.startswith("vaefp_jax/equations.py:") and where in line for line in bad), bad


# --------------------------------------------------------------------------- jaxprs


def _second_derivative(psi, lp, linear_solve):
    """β ↦ u″(β) by forward implicit differentiation at ψ (as the sweep computes it)."""
    F = lambda p, t: equations.step(p, t["x"], t["beta"], t["log_prior"])
    u = lambda b: equations.order_parameter(
        vf.implicit_fixed_point(F, lambda t: psi, {"x": X, "beta": b, "log_prior": lp}, linear_solve), X, b, lp)
    du = lambda b: jax.jvp(u, (b,), (jnp.ones_like(b),))[1]
    return lambda b: jax.jvp(du, (b,), (jnp.ones_like(b),))[1]


@pytest.mark.usefixtures("float32_only")
def test_jaxpr_walker_sees_every_product():
    psi = X[:4]
    lp = np.asarray(GRID.log_prior, np.float32)
    beta = np.float32(1.0)
    f = tile_jacobian.jacobian_factors(psi, X, beta, lp)
    jaxprs = {
        "evaluate": jax.make_jaxpr(equations.evaluate)(psi, X, beta, lp),
        "evaluate_log_space": jax.make_jaxpr(equations.evaluate_log_space)(psi, X, beta, lp),
        "blocked": jax.make_jaxpr(lambda p: vf.BlockedMap().evaluate(p, X, beta, lp))(psi),
        "solve_accelerated": jax.make_jaxpr(
            lambda: vf.solve(X, BETAS, GRID, iteration=vf.Accelerated(), throw=False).psi)(),
        "solve_lipschitz_bound": jax.make_jaxpr(
            lambda: vf.solve(X, BETAS, LIP_GRID, constraint=vf.LipschitzBound(1.0, r=1.0),
                             iteration=vf.Damped.paper(), throw=False).psi)(),
        "power": jax.make_jaxpr(lambda: operators.power_iteration(f, psi, 4))(),
        "lanczos": jax.make_jaxpr(lambda: operators.lanczos(f, psi, 4))(),
        "woodbury": jax.make_jaxpr(lambda r: tile_jacobian.woodbury_solve_factors(f, r))(psi),
        "u'' (Woodbury)": jax.make_jaxpr(_second_derivative(psi, lp, vf.Woodbury()))(beta),
        "u'' (GMRES)": jax.make_jaxpr(_second_derivative(psi, lp, vf.GMRES()))(beta),
        "preimage": jax.make_jaxpr(lambda z: propositions.preimage_step(z, X, np.zeros(len(X), np.float32),
                                                                         1.0))(psi),
    }
    sites = set()
    for name, closed in jaxprs.items():
        dots = jaxpr_dots(closed)
        assert dots, name
        bad = not_highest(dots)
        assert not bad, (name, _message(bad))
        sites |= {site for _, site in dots}
    for where in ("tile_jacobian.py", "(matvec)", "(lanczos)", "(woodbury_solve_factors)", "barrier.py",
                  "(preimage_step)", "(_normalised)", "(squared_distances)"):
        assert any(where in s for s in sites), (where, sorted(sites))
    # mutation check: the walker finds a plain product inside a loop inside a jit
    loop = lambda a: jax.lax.fori_loop(0, 2, lambda i, u: jnp.tanh(u @ u), a)
    assert not_highest(jaxpr_dots(jax.make_jaxpr(jax.jit(loop))(jnp.eye(3))))


# --------------------------------------------------------------------------- lowered for CUDA


@pytest.mark.usefixtures("float32_only")
def test_cuda_program_states_highest_on_every_product():
    psi = X[:4]
    lp = np.asarray(GRID.log_prior, np.float32)
    beta = np.float32(1.0)
    programs = {
        "dense map": cuda_dots(equations.evaluate, psi, X, beta, lp),
        "dense map, reused shifts": cuda_dots(
            lambda p: vf.DenseMap().evaluate_warm(p, X, beta, lp, (jnp.zeros(len(X), jnp.float32),
                                                                   jnp.zeros(4, jnp.float32)))[0], psi),
        "blocked map": cuda_dots(lambda p: vf.BlockedMap().evaluate(p, X, beta, lp), psi),
        "solve, accelerated": cuda_dots(lambda x: vf.solve(x, BETAS, GRID, iteration=vf.Accelerated(),
                                                           throw=False).psi, X),
        "solve, Lipschitz": cuda_dots(lambda x: vf.solve(x, BETAS, LIP_GRID, constraint=vf.LipschitzStrength(0.1),
                                                         iteration=vf.Damped.paper(), throw=False).psi, X),
    }
    for name, lines in programs.items():
        assert lines, name
        assert not cuda_not_highest(lines), (name, cuda_not_highest(lines))
    # mutation check: a product without the precision is lowered at DEFAULT (TF32) and caught
    plain = cuda_dots(lambda a: a @ a.T, X)
    assert plain and cuda_not_highest(plain) == plain and "DEFAULT" in plain[0]


# --------------------------------------------------------------------------- the native kernel


def test_native_kernel_is_a_custom_call_not_a_product():
    """The C++ kernel of the dense map's one pass (d ≤ 64, CPU) is an FFI custom call, which
    the policy does not touch; the products of its JVP (XLA's form) are at HIGHEST. Where it
    cannot be built, the dense map uses XLA's form, whose products are checked above."""
    if not native.status().available:  # determines (and builds) the kernel first
        assert not native.supports(2, jnp.float32)
        return
    x = X[:, :2]
    args = (x[:4], x, np.float32(0.1), np.asarray(GRID.log_prior, np.float32), np.zeros(len(x), np.float32),
            np.zeros(4, np.float32))
    closed = jax.make_jaxpr(native.evaluate_shifted)(*args)
    assert "ffi_call" in str(closed) and not jaxpr_dots(closed)
    text = jax.jit(native.evaluate_shifted).trace(*args).lower(lowering_platforms=("cpu",)).as_text()
    assert "vaefp_shifted_sums_f32" in text and "dot_general" not in text
    tangents = jax.make_jaxpr(lambda p: jax.jvp(lambda q: native.evaluate_shifted(q, *args[1:])[0].psi,
                                                (p,), (p,)))(args[0])
    dots = jaxpr_dots(tangents)
    assert dots and not not_highest(dots)
    # the dense map's warm evaluation on CPU takes the kernel, not a product
    warm = jax.make_jaxpr(lambda p: vf.DenseMap().evaluate_warm(p, x, args[2], args[3], args[4:])[0].psi)(args[0])
    assert "vaefp_shifted_sums_f32" in str(warm)
