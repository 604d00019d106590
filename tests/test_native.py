"""The C++ kernel of the one-pass map (vaefp_jax.native): built where a compiler is, equal to
the NumPy extended-precision map and to XLA's form, batched as vmap batches it, differentiable,
and reported (never silently wrong) where it cannot be built.

References: ``np_reference`` of tests/test_one_exponential.py with its criterion (at most
twice the log-space map's error plus a few ulps; 1e-5 / 1e-12 relative wherever the
log-space map meets that), and XLA's form ``equations.evaluate_shifted`` for the range
check and the batching (the same sums in another order: a few hundred ulps of the largest
term, the bound used in tests/test_reused_shifts.py).
"""

import os
import platform
import shlex
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_one_exponential import BETAS, PROBLEMS, WIDE, _rel, assert_as_accurate_as_log_space, np_reference
from test_reused_shifts import _moved

import vaefp_jax as vf
from vaefp_jax import equations, native
from vaefp_jax.engine.schedules import Vmapped
from vaefp_jax.native import build


def _extra_problems():
    """Shapes the kernel treats apart: d = 1, 3 and 8 (unrolled), 12 (any d); n below one block
    of four rows and not a multiple of it; K a multiple of the vector width and not."""
    rng = np.random.default_rng(3)
    for n, K, d in ((1, 5, 1), (3, 16, 3), (7, 9, 8), (13, 40, 12)):
        x = rng.normal(size=(n, d))
        psi = rng.normal(size=(K, d))
        lp = rng.normal(size=K)
        yield f"n{n}-K{K}-d{d}", x, psi, lp - np.log(np.exp(lp).sum())


ALL = PROBLEMS + list(_extra_problems())
PROBLEM_NAMES = {p[0] for p in PROBLEMS}
needs_kernel = pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler: see test_kernel_status")


def _ulps(dtype, ref):
    return 1e3 * np.finfo(dtype).eps * (1 + np.max(np.abs(np.asarray(ref))))


def test_kernel_status():
    # built and loaded exactly where there is a compiler (CI has one); where not, the reason
    st = native.status()
    if os.environ.get("VAEFP_JAX_NATIVE", "1") == "0":
        assert not st.available and "VAEFP_JAX_NATIVE" in st.reason
    elif build.compiler() is None:
        assert not st.available and "compiler" in st.reason
    else:
        assert st.available, st.reason
        assert os.path.exists(st.reason)
    assert "\n" not in str(st)


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, x, psi, lp", ALL, ids=[p[0] for p in ALL])
def test_native_against_numpy_and_xla(name, x, psi, lp, dtype, x64):
    eps = np.finfo(dtype).eps
    wide = np.float64 if dtype == np.float32 else WIDE
    xj, lpj = jnp.asarray(x, dtype), jnp.asarray(lp, dtype)
    # every β of 1e-6 … 1e6 on the problems XLA's form is tested on; every other one (1e-6,
    # 1e-4, …, 1e6) on the shapes of _extra_problems
    for beta in BETAS if name in PROBLEM_NAMES else BETAS[::2]:
        b = jnp.asarray(beta, dtype)
        now = np.asarray(_moved(psi, beta, 0.05), dtype)
        old = equations.evaluate(jnp.asarray(psi, dtype), xj, b, lpj)
        value, ok = native.evaluate_shifted(jnp.asarray(now), xj, b, lpj, old.log_c, old.log_mass)
        xla, ok_xla = equations.evaluate_shifted(jnp.asarray(now), xj, b, lpj, old.log_c, old.log_mass)
        scale = max(np.max(np.abs(np.asarray(old.log_c))), np.max(np.abs(np.asarray(old.log_mass))))
        if scale * eps < 0.25:          # the shifts hold the logits' changes: both checks pass
            assert bool(ok) and bool(ok_xla), (name, beta)
        if not bool(ok):
            continue
        two = equations.evaluate_log_space(jnp.asarray(now), xj, b, lpj)
        ref = np_reference(now, np.asarray(x, dtype), dtype(beta), np.asarray(lp, dtype), wide)
        if name in PROBLEM_NAMES:      # the criterion XLA's form meets (tests/test_reused_shifts.py)
            assert_as_accurate_as_log_space(value, two, ref, dtype, (name, beta))
        _assert_as_accurate_as_xla(value, xla, two, ref, np.asarray(x, dtype), dtype, (name, beta))


def _assert_as_accurate_as_xla(value, xla, two, ref, x, dtype, where):
    """The kernel computes XLA's shifted form with its sums in another order and ℓ = −sq/2β as
    a product: against the NumPy reference, either

    * within the rounding both forms share: the arguments ℓ_bi − a_i − s_b of the
      exponentials carry an absolute error of a few ulps of L = max|a| + max|s| (the size of
      the logits that carry weight, a_i + s_b ≈ ℓ_bi, cancelled), which moves log c_i and
      log Σ_i m_ib by as much and ψ_b = Σ_i w_bi x_i by that times the data's diameter D;
      with the rounding of sums of n + K order-one terms on top: |error| ≤ 8 eps (1 + L) D'
      + (n + K + 8) eps (1 + max|ref|), D' = D for ψ and 1 for the logarithms; or
    * at most twice the error of the better of XLA's two forms (shifted, log-space) plus a
      few ulps, and within 1e-5 / 1e-12 relative wherever XLA's shifted form is."""
    eps = np.finfo(dtype).eps
    floor = 8 * eps if np.finfo(np.float64 if dtype == np.float32 else WIDE).eps < eps else 1e3 * eps
    bound = 1e-5 if dtype == np.float32 else 1e-12
    n, K = value.log_c.shape[-1], value.log_mass.shape[-1]
    L = np.max(np.abs(np.asarray(ref[1]))) + np.max(np.abs(np.asarray(ref[2])))
    diameter = 2 * np.max(np.abs(np.asarray(x) - np.mean(x, axis=0)))
    for field, r, D in zip(("psi", "log_c", "log_mass"), ref, (diameter, 1.0, 1.0)):
        a = np.asarray(getattr(value, field))
        assert a.dtype == dtype and np.all(np.isfinite(a)), (where, field)
        tol = 8 * eps * (1 + L) * D + (n + K + 8) * eps * (1 + np.max(np.abs(r)))
        if np.max(np.abs(np.asarray(a, WIDE) - np.asarray(r, WIDE))) <= tol:
            continue
        err = _rel(a, r, field)
        err_xla, err_two = (_rel(getattr(v, field), r, field) for v in (xla, two))
        assert err <= 2 * min(err_xla, err_two) + floor, (where, field, err, err_xla, err_two)
        if err_xla <= bound:
            assert err <= bound, (where, field, err, err_xla)


def _pair_exp(z, dtype):
    """The kernel's exponential of one (tile, point) pair, E = exp(ℓ − a − s), read off c̃:
    one point on one tile (ℓ = 0, π = 1, s = 0, so g = e^0 = 1 exactly and c̃ = E) with the
    row shift a = −z, batched over z."""
    zero = jnp.zeros((1, 1), dtype)
    one = lambda z: native.shifted_sums(zero, zero, jnp.asarray(1.0, dtype), jnp.zeros((1,), dtype),
                                        -z[None], jnp.zeros((1,), dtype))[1][0]
    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(z, dtype)))


@needs_kernel
def test_native_pair_exponential_accuracy(x64):
    # the exponential behind every E_bi, over the whole range the kernel evaluates it on
    # ([log 2^−126, 88] in float32), against np.longdouble's exp of the same float argument.
    # float32 (shifted_map.cc, ExpConstants<float>): the polynomial's 1.7e-7 evaluated, plus,
    # with a fused multiply-add, the one-step reduction's |k| · 1.9e-9 (k = round(z / ln 2));
    # without one the two-step reduction adds ~1e-8. Bound 2e-7 + 2e-9 |k| (measured with
    # and without FMA: 1.67e-7 + 1.9e-9 |k|, 1.77e-7). A degree-5 polynomial off by 1e-5 in
    # one coefficient (1.2e-6 in E) fails it, and so did the one-step reduction without FMA
    # (4.2e-6). float64: the degree-13 Taylor polynomial after a two-step reduction, within
    # a few ulps; bound 2 eps (measured 0.68 eps; 3 eps where the reference is float64's own exp).
    for dtype, lo, hi in ((np.float32, -87.3, 88.0), (np.float64, -708.0, 709.0)):
        z = np.linspace(lo, hi, 20001).astype(dtype)
        z = np.concatenate([z, (np.arange(-126, 127) * np.log(2) + 0.5 * np.log(2)).astype(dtype)])  # |r| = ln2/2
        z = z[(z >= lo) & (z <= hi)]
        got = _pair_exp(z, dtype)
        rel = np.abs(np.asarray(got, WIDE) / np.exp(np.asarray(z, WIDE)) - 1)
        if dtype == np.float32:
            bound = 2e-7 + 2e-9 * np.abs(np.rint(z / np.log(2)))
        else:
            bound = np.full(z.shape, (2 if WIDE is not np.float64 else 3) * np.finfo(np.float64).eps)
        worst = np.argmax(rel / bound)
        assert np.all(rel <= bound), (dtype.__name__, float(z[worst]), float(rel[worst]), float(bound[worst]))


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_batches_as_vmap_does(dtype, x64):
    # β batched alone, (β, ψ) batched together, and nested vmaps batching different inputs
    # (leading dimensions of size 1 broadcast in the kernel); batch sizes below and above
    # the number of threads (pieces of one β's points, and whole β per thread; CI has 2)
    _, x, psi, lp = ALL[0]
    xj, lpj = jnp.asarray(x, dtype), jnp.asarray(lp, dtype)
    for num in (1, 5):
        betas = jnp.asarray(np.geomspace(1e-3, 1.0, num), dtype)
        psis = jnp.asarray(np.stack([_moved(psi, 1.0, 0.05, seed=s) for s in range(num)]), dtype)
        olds = jax.vmap(lambda b, p: equations.evaluate(p, xj, b, lpj))(betas, psis)
        f = lambda fn: jax.vmap(lambda b, p, a, s: fn(p * 1.01, xj, b, lpj, a, s))(betas, psis, olds.log_c,
                                                                                  olds.log_mass)
        got, want = f(native.evaluate_shifted), f(equations.evaluate_shifted)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
        for field in ("psi", "log_c", "log_mass"):
            r = getattr(want[0], field)
            np.testing.assert_allclose(np.asarray(getattr(got[0], field)), np.asarray(r), rtol=0, atol=_ulps(dtype, r))
    # nested: betas outer (3), ψ inner (2); the shifts of the unmoved ψ broadcast over ψ
    betas = jnp.asarray([1e-2, 0.1, 1.0], dtype)
    psis = jnp.asarray(np.stack([psi, _moved(psi, 1.0, 0.05)]), dtype)
    olds = jax.vmap(lambda b: equations.evaluate(jnp.asarray(psi, dtype), xj, b, lpj))(betas)
    nest = lambda fn: jax.vmap(lambda b, a, s: jax.vmap(lambda p: fn(p, xj, b, lpj, a, s)[0].psi)(psis))(
        betas, olds.log_c, olds.log_mass)
    got, want = nest(native.evaluate_shifted), nest(equations.evaluate_shifted)
    assert got.shape == (3, 2) + psi.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=_ulps(dtype, want))


@needs_kernel
def test_native_nan_fails_the_check_and_propagates(x64):
    # a NaN in ψ makes its E_bi the clamp's top (e^88 ≈ 2^127 in float32, e^709 in float64),
    # so the range check fails, and the map's fallback returns NaN as XLA's form does: never
    # a finite, wrong value
    _, x, psi, lp = ALL[0]
    args = [jnp.asarray(a, jnp.float64) for a in (psi, x, 0.1, lp)]
    v = equations.evaluate(*args)
    bad = args[0].at[3, 1].set(jnp.nan)
    _, ok = native.evaluate_shifted(bad, *args[1:], v.log_c, v.log_mass)
    assert not bool(ok)
    warm = jax.jit(lambda p: vf.DenseMap(kernel="native").evaluate_warm(p, *args[1:], (v.log_c, v.log_mass))[0])
    assert np.isnan(np.asarray(warm(bad).psi)).any()      # (eagerly, evaluate's check raises instead)


@needs_kernel
def test_native_derivatives_are_xla_forms(x64):
    # forward and reverse mode through the kernel's custom_jvp equal XLA's form's (float64)
    _, x, psi, lp = ALL[0]
    xj, lpj = jnp.asarray(x), jnp.asarray(lp)
    p0 = jnp.asarray(psi)
    old = equations.evaluate(p0, xj, 0.05, lpj)
    p1 = jnp.asarray(_moved(psi, 0.05, 0.05))
    def loss(fn):
        return lambda p, b: jnp.sum(fn(p, xj, b, lpj, old.log_c, old.log_mass)[0].psi ** 2)
    t = jnp.asarray(np.random.default_rng(1).normal(size=psi.shape))
    got = jax.jvp(loss(native.evaluate_shifted), (p1, 0.05), (t, 1.0))
    want = jax.jvp(loss(equations.evaluate_shifted), (p1, 0.05), (t, 1.0))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    g_got = jax.grad(loss(native.evaluate_shifted), argnums=(0, 1))(p1, 0.05)
    g_want = jax.grad(loss(equations.evaluate_shifted), argnums=(0, 1))(p1, 0.05)
    for a, b in zip(g_got, g_want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("schedule", [vf.Pool(width=3), Vmapped(batch_size=1)], ids=["pool-3", "one-at-a-time"])
def test_solve_native_equals_xla(schedule, x64):
    # tight float64 solves over the transitions of the three-cluster data: the same fixed
    # points (1e-9) and step counts (within 2) with the kernel and with XLA's form
    x = vf.datasets.three_clusters(40, seed=1)
    grid = vf.LatentGrid.uniform(8)
    betas = np.geomspace(1e-3, 1.0, 9)
    out = {k: vf.solve(x, betas, grid, iteration=vf.Damped.tight(), schedule=schedule,
                       step_map=vf.DenseMap(kernel=k)) for k in ("native", "xla")}
    for k in out:
        assert np.all(out[k].converged), k
    np.testing.assert_allclose(np.asarray(out["native"].psi), np.asarray(out["xla"].psi), rtol=0, atol=1e-9)
    assert np.max(np.abs(np.asarray(out["native"].steps) - np.asarray(out["xla"].steps))) <= 2


def _isa_variants():
    """Builds of the kernel for the vector code paths of shifted_map.cc other than this CPU's
    own (-march=native), that this CPU runs: (name, flags appended to the build's). "sse2":
    the generic vector code, no AVX, no fused multiply-add (the float32 exponential's
    two-step reduction); "avx2" where the CPU has AVX-512: 256-bit vectors with FMA. x86-64
    only (the flags are x86's)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or build.compiler() is None:
        return []
    out = [("sse2", "-march=x86-64")]
    if "avx512f" in build._cpu_flags().split():
        out.append(("avx2", "-mno-avx512f"))
    return out


ISA_VARIANTS = _isa_variants()


@needs_kernel
@pytest.mark.parametrize("name, flags", ISA_VARIANTS, ids=[v[0] for v in ISA_VARIANTS])
def test_native_other_vector_paths(name, flags, tmp_path):
    # The kernel compiles for the CPU it runs on, so CI on one machine tests one of its vector
    # paths (vector width, FMA or not), and a user's CPU may take another. Build the others
    # this CPU can run, in a fresh cache, and run the accuracy tests of this file with each
    # (a new process: one library per process): the exponential, and the map against the
    # NumPy reference on the shapes that exercise the padding of K to the vector width.
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(build.compiler())} "$@" {flags}\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "CXX": str(wrapper), "VAEFP_JAX_CACHE": str(tmp_path / "cache"), "VAEFP_JAX_NATIVE": "1"}
    select = "kernel_status or pair_exponential or nan or (against_numpy and (far or n1- or n3- or n7- or n13-))"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", __file__, "-k", select]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=500, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, (name, out.stdout[-4000:], out.stderr[-2000:])
    assert "13 passed" in out.stdout, out.stdout[-2000:]
    assert len(list((tmp_path / "cache").glob("*.so"))) == 1    # built with the wrapper, used


def test_dense_map_kernel_option():
    assert repr(vf.DenseMap(kernel="xla")) == "DenseMap(kernel='xla')"
    assert repr(vf.DenseMap()) == "DenseMap()"
    with pytest.raises(ValueError, match="kernel must be one of"):
        vf.DenseMap(kernel="fast")
    for other in (dict(form="log_space"), dict(reuse_shifts=False)):
        with pytest.raises(ValueError, match="kernel='native' computes the one pass"):
            vf.DenseMap(kernel="native", **other)


def test_gpu_lowering_uses_xla_form():
    # on other platforms the auto kernel lowers to XLA's form, not the CPU custom call (built
    # first: tracing never builds, and without a kernel the CPU lowering would be XLA's anyway)
    native.ensure_built()
    _, x, psi, lp = ALL[0]
    args = [jnp.asarray(a, jnp.float32) for a in (psi, x, 0.1, lp)]
    state = (jnp.zeros(x.shape[0], jnp.float32), jnp.zeros(psi.shape[0], jnp.float32))
    f = jax.jit(lambda *a: vf.DenseMap().evaluate_warm(*a, state)[0].psi)
    text = f.trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    assert "vaefp_shifted_sums" not in text
    if native.status().available:
        assert "vaefp_shifted_sums" in f.trace(*args).lower(lowering_platforms=("cpu",)).as_text()


@pytest.fixture
def fresh_status(monkeypatch, tmp_path):
    """A status to be recomputed under the test's environment, restored afterwards."""
    monkeypatch.setenv("VAEFP_JAX_CACHE", str(tmp_path / "cache"))
    build._reset_for_tests()
    yield tmp_path
    monkeypatch.undo()
    build._reset_for_tests()


def test_missing_compiler_is_reported_and_auto_falls_back(fresh_status, monkeypatch, x64):
    monkeypatch.setenv("CXX", "no-such-compiler-vaefp")
    st = native.status()
    assert not st.available and "no-such-compiler-vaefp" in st.reason and "not found" in st.reason
    with pytest.raises(ValueError, match="kernel='native'.*unavailable") as err:
        vf.DenseMap(kernel="native").check(10, 4, 2)
    assert "\n" not in str(err.value)
    # the auto kernel takes XLA's form, with the same value
    _, x, psi, lp = ALL[0]
    args = [jnp.asarray(a) for a in (psi, x, 0.1, lp)]
    v = equations.evaluate(*args)
    value, _ = vf.DenseMap().evaluate_warm(*args, (v.log_c, v.log_mass))
    np.testing.assert_allclose(np.asarray(value.psi), np.asarray(v.psi), rtol=0, atol=_ulps(np.float64, v.psi))
    monkeypatch.setenv("VAEFP_JAX_NATIVE", "0")
    build._reset_for_tests()
    assert "disabled" in native.status().reason


def test_failed_build_is_reported(fresh_status, monkeypatch):
    fake = fresh_status / "fakecxx"
    fake.write_text("#!/bin/sh\necho 'fakecxx: error: no such thing' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CXX", str(fake))
    st = native.status()
    assert not st.available and "failed" in st.reason and "no such thing" in st.reason
    assert not list((fresh_status / "cache").glob("*.so"))     # no partial library left behind


@needs_kernel
def test_build_is_cached_on_disk_and_rebuilt_if_it_does_not_load(fresh_status):
    # one build into the fresh cache, found again (not rebuilt) by a second status; then a file
    # of the library's name that is not a library (a truncated copy, say) is replaced, in a new
    # process (this one has the library loaded, and dlopen would return it)

    st = native.status()
    assert st.available and st.reason.startswith(str(fresh_status / "cache"))
    path = st.reason
    mtime = os.stat(path).st_mtime_ns
    build._reset_for_tests()
    again = native.status()
    assert again.reason == path and os.stat(path).st_mtime_ns == mtime
    with open(path, "wb") as f:
        f.write(b"not a shared library")
    code = "from vaefp_jax.native import build; st = build.status(); print(st.available, st.reason)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VAEFP_JAX_CACHE": str(fresh_status / "cache")})
    assert out.stdout.split() == ["True", path], out.stderr[-2000:]
    assert os.path.getsize(path) > 1000
