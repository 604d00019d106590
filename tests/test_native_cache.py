"""The safety of the C++ kernel's cache (vaefp_jax.native.build) and when the kernel is built.

A shared library runs inside the process that loads it, and its file name is a hash of public
inputs: anyone who can write into the cache folder can plant a library under that name. The
loader must use only a folder that is the user's own with mode 0700 (tightening a 0755 one of
the user's, refusing one that others can write into or that another user owns, also for the
temporary-directory fallback) and only a regular file of the user's that nobody else can
write; a refusal makes the kernel unavailable with the reason, it is not worked around.

Planted libraries are real: a tiny shared library whose constructor writes a marker file, at
the exact name the loader looks for (``build.library_name``); the marker must not appear,
and a control (test_planted_library_runs_where_the_cache_is_good) shows that the same file in
a good folder is loaded, so that the refusals are not passing for a wrong name. Folders of
another user are made with ``os.chown`` as root (CI), otherwise simulated by pretending to be
another user (``build._current_uid``).

The real kernel is compiled at most once here (or found in the default cache); tests that
need a library in a fresh folder copy it, through a stand-in for ``build._compile``. Every
test restores this process's status and library afterwards (monkeypatch), so the other tests
of a worker still get the kernel.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vaefp_jax as vf
from vaefp_jax import native
from vaefp_jax.native import build

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER_UID = 54321
MARKER_ENV = "VAEFP_TEST_PLANTED_MARKER"
REPO = Path(__file__).resolve().parent.parent

needs_compiler = pytest.mark.skipif(
    build.compiler() is None, reason="no C++ compiler ($CXX, c++, g++, clang++) to build libraries with; CI has g++")

PLANTED_SOURCE = r"""
#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void vaefp_planted() {
    const char *marker = std::getenv("VAEFP_TEST_PLANTED_MARKER");
    if (marker) {
        if (FILE *f = std::fopen(marker, "w")) { std::fputs("planted code ran\n", f); std::fclose(f); }
    }
}
"""


def _mapped(path) -> bool:
    """Whether ``path`` is mapped into this process (a loaded library); False without /proc."""
    try:
        return str(path) in Path("/proc/self/maps").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A shared library whose constructor writes the file named by $VAEFP_TEST_PLANTED_MARKER."""
    cxx = build.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler to build the planted library with; CI has g++")
    where = tmp_path_factory.mktemp("planted")
    (where / "planted.cc").write_text(PLANTED_SOURCE)
    out = subprocess.run([cxx, "-shared", "-fPIC", "-o", str(where / "planted.so"), str(where / "planted.cc")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return where / "planted.so"


@pytest.fixture(scope="module")
def real_library(tmp_path_factory):
    """A copy of the real kernel library: the one this process loads (built in, or found in,
    the default cache: the build every other test of the worker uses)."""
    if build.compiler() is None:
        pytest.skip("no C++ compiler: the kernel cannot be built; CI has g++")
    if os.environ.get("VAEFP_JAX_NATIVE", "1") == "0":
        pytest.skip("VAEFP_JAX_NATIVE=0")
    st = build.status()
    assert st.available, st.reason
    copy = tmp_path_factory.mktemp("real") / "kernel.so"
    shutil.copyfile(st.reason, copy)
    return copy


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A status to be determined anew with the cache at tmp_path/cache and the temporary folder at
    tmp_path/tmp (like /tmp: 1777); this process's status and library are restored afterwards.
    ``fresh.marker``: where a planted library would write (must stay absent)."""
    monkeypatch.setattr(build, "_cached", None)
    monkeypatch.setattr(build, "_lib", build._lib)
    monkeypatch.delenv("VAEFP_JAX_NATIVE", raising=False)
    monkeypatch.setenv("VAEFP_JAX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp").chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "marker"))
    compiles = []

    def no_compile(cxx, output):
        compiles.append(output)
        raise RuntimeError("this test must not compile")

    monkeypatch.setattr(build, "_compile", no_compile)

    class Fresh:
        path = tmp_path
        marker = tmp_path / "marker"
        cache = tmp_path / "cache"
        tmp = tmp_path / "tmp"
        compiled = compiles
        name = build.library_name(build.compiler()) if build.compiler() else None

        @staticmethod
        def compile_as_copy_of(library):
            """Make the build copy ``library`` (a file of ours) instead of compiling."""
            def copy(cxx, output):
                compiles.append(output)
                shutil.copyfile(library, output)
            monkeypatch.setattr(build, "_compile", copy)

    return Fresh


def _give_to_other_user(path, monkeypatch, *, follow=True):
    """Make ``path`` another user's: chown to OTHER_UID as root; otherwise pretend this process
    is another user. Returns the uid the reason should name."""
    if ROOT:
        (os.chown if follow else os.lchown)(path, OTHER_UID, OTHER_UID)
        return OTHER_UID
    me = os.getuid()
    monkeypatch.setattr(build, "_current_uid", lambda: me + 1)
    return me


def _folder(path, mode=0o700):
    path.mkdir(parents=True)
    path.chmod(mode)
    return path


def _plant(folder, library, name, mode=0o755):
    target = folder / name
    shutil.copyfile(library, target)
    target.chmod(mode)
    return target


def _assert_refused(st, kind, path, why):
    assert not st.available, st
    assert "\n" not in str(st)
    assert str(st).startswith(f"native kernels unavailable: refusing {kind} {path}"), str(st)
    assert why in st.reason, st.reason
    assert "set VAEFP_JAX_CACHE to a folder of your own with mode 0700" in st.reason
    assert build.peek() == st


# -- the configured folder -------------------------------------------------------------------

@needs_compiler
@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777, 0o720], ids=lambda m: f"{m:04o}")
def test_folder_others_can_write_into_is_refused(fresh, planted, mode):
    # (a), (b1): a library planted in a folder that group or others can write into is never
    # loaded, the folder is left as it is, and the kernel is unavailable with the reason
    folder = _folder(fresh.cache, mode)
    lib = _plant(folder, planted, fresh.name)
    st = native.status()
    _assert_refused(st, "cache folder", folder, f"writable by other users (mode {mode:04o})")
    assert not fresh.marker.exists() and not _mapped(lib)
    assert stat.S_IMODE(folder.stat().st_mode) == mode and fresh.compiled == []
    # the step maps take XLA's form; kernel="native" says why it cannot
    assert not native.supports(2, jnp.float32)
    vf.DenseMap().check(10, 4, 2)
    with pytest.raises(ValueError, match="refusing cache folder"):
        vf.DenseMap(kernel="native").check(10, 4, 2)


@needs_compiler
def test_folder_of_another_user_is_refused(fresh, planted, monkeypatch):
    # (b2): 0700, but another user's: refused, the planted library never runs
    folder = _folder(fresh.cache)
    lib = _plant(folder, planted, fresh.name)
    if ROOT:
        os.chown(lib, OTHER_UID, OTHER_UID)
    uid = _give_to_other_user(folder, monkeypatch)
    st = native.status()
    _assert_refused(st, "cache folder", folder, f"owned by another user (uid {uid})")
    assert not fresh.marker.exists() and not _mapped(lib)


@needs_compiler
@pytest.mark.parametrize("what", ["other_owner", "group_writable", "other_writable", "symlink", "directory"])
def test_planted_file_in_a_private_folder_is_refused(fresh, planted, monkeypatch, what):
    # (c): the folder is good (ours, 0700) but the file at the library's name is not: another
    # user's, writable by others, a symbolic link (to a file of ours), not a regular file
    folder = _folder(fresh.cache)
    target = folder / fresh.name
    if what == "other_owner":
        if not ROOT:
            pytest.skip("giving a file to another user needs root (CI runs as root)")
        _plant(folder, planted, fresh.name)
        os.chown(target, OTHER_UID, OTHER_UID)
        why = f"owned by another user (uid {OTHER_UID})"
    elif what in ("group_writable", "other_writable"):
        mode = 0o775 if what == "group_writable" else 0o757
        _plant(folder, planted, fresh.name, mode)
        why = f"writable by other users (mode {mode:04o})"
    elif what == "symlink":
        elsewhere = _folder(fresh.path / "elsewhere")
        os.symlink(_plant(elsewhere, planted, "lib.so"), target)
        why = "a symbolic link"
    else:
        target.mkdir()
        why = "not a regular file"
    st = native.status()
    _assert_refused(st, "cached library", target, why)
    assert not fresh.marker.exists() and not _mapped(target) and fresh.compiled == []


@needs_compiler
def test_planted_library_runs_where_the_cache_is_good(fresh, planted):
    # the control of the tests above: the same planted file, at the same name, in a folder and
    # file that pass the checks, IS loaded (in another process): the refusals above are the
    # checks', not a wrong file name's
    folder = _folder(fresh.cache)
    _plant(folder, planted, fresh.name)
    code = "from vaefp_jax.native import build; print(build.status())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VAEFP_JAX_CACHE": str(folder)}, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert fresh.marker.read_text() == "planted code ran\n", out.stdout
    assert "VaefpShiftedSums" in out.stdout      # loaded, then found not to be the kernel


@needs_compiler
def test_private_folder_readable_by_others_is_tightened_and_used(fresh, real_library):
    # (d): 0755, ours (what earlier versions made): nobody else could write into it, so it is
    # made 0700 and its library loaded (not rebuilt)
    folder = _folder(fresh.cache, 0o755)
    lib = _plant(folder, real_library, fresh.name, 0o755)
    st = native.status()
    assert st.available and st.reason == str(lib), st
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert fresh.compiled == []
    if Path("/proc/self/maps").exists():
        assert _mapped(lib)


@needs_compiler
def test_new_folder_is_made_private_whatever_the_umask(fresh, real_library, monkeypatch):
    # (e): a folder that does not exist is made with mode 0700 (umask 0 would leave 0777 to a
    # plain mkdir), the library is built into it, not writable by others, and loaded
    folder = fresh.path / "a" / "b" / "cache"
    monkeypatch.setenv("VAEFP_JAX_CACHE", str(folder))
    fresh.compile_as_copy_of(real_library)
    old = os.umask(0)
    try:
        st = native.status()
    finally:
        os.umask(old)
    assert st.available and st.reason == str(folder / fresh.name), st
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not (folder / fresh.name).stat().st_mode & 0o077
    assert len(fresh.compiled) == 1 and [p.name for p in folder.iterdir()] == [fresh.name]
    if Path("/proc/self/maps").exists():
        assert _mapped(folder / fresh.name)


# -- the temporary-directory fallback -------------------------------------------------------

@needs_compiler
@pytest.mark.parametrize("what", ["new", "world_writable", "other_owner", "symlink_of_other_user"])
def test_fallback_folder(fresh, planted, real_library, monkeypatch, what):
    # the configured folder cannot be created (its parent is a file): <tmp>/vaefp_jax-<uid> is
    # used, made 0700 where it is new; one that exists and is another user's, that others can
    # write into, or a symbolic link another user made there, is refused
    (fresh.path / "file").write_text("")
    configured = fresh.path / "file" / "cache"
    monkeypatch.setenv("VAEFP_JAX_CACHE", str(configured))
    fresh.compile_as_copy_of(real_library)
    if what == "new":
        st = native.status()
        folder = build.fallback_dir()
        assert folder == fresh.tmp / f"vaefp_jax-{os.getuid()}"
        assert st.available and st.reason == str(folder / fresh.name), st
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and len(fresh.compiled) == 1
        return
    if what == "world_writable":
        folder = _folder(build.fallback_dir(), 0o777)
        lib = _plant(folder, planted, fresh.name)
        why = "writable by other users (mode 0777)"
    elif what == "other_owner":
        if ROOT:
            folder = _folder(build.fallback_dir())
            lib = _plant(folder, planted, fresh.name)
            os.chown(lib, OTHER_UID, OTHER_UID)
            os.chown(folder, OTHER_UID, OTHER_UID)
            uid = OTHER_UID
        else:                               # we pretend to be another user: the folder is named for it
            uid = os.getuid()
            monkeypatch.setattr(build, "_current_uid", lambda: uid + 1)
            folder = _folder(build.fallback_dir())
            lib = _plant(folder, planted, fresh.name)
        why = f"owned by another user (uid {uid})"
    else:
        if not ROOT:
            pytest.skip("a symbolic link of another user needs root to make (CI runs as root)")
        real = _folder(fresh.path / "ours")
        lib = _plant(real, planted, fresh.name)
        folder = build.fallback_dir()
        os.symlink(real, folder)
        os.lchown(folder, OTHER_UID, OTHER_UID)
        why = f"a symbolic link owned by another user (uid {OTHER_UID})"
    st = native.status()
    _assert_refused(st, "cache folder", folder, why)
    assert f"the fallback: cannot create {configured}" in st.reason
    assert not fresh.marker.exists() and not _mapped(lib) and fresh.compiled == []


def test_configured_folder_is_not_traded_for_the_fallback(fresh, monkeypatch):
    # a refused configured folder makes the kernel unavailable: no library is built or looked
    # for in the temporary directory instead
    _folder(fresh.cache, 0o777)
    st = native.status()
    _assert_refused(st, "cache folder", fresh.cache, "writable by other users")
    assert not build.fallback_dir().exists() and fresh.compiled == []


# -- when the kernel is built -----------------------------------------------------------------

def _problem(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(23, 2)), dtype)
    psi = jnp.asarray(rng.normal(size=(5, 2)), dtype)
    lp = jnp.full((5,), -np.log(5.0), dtype)
    return psi, x, jnp.asarray(0.7, dtype), lp


def test_tracing_never_builds(fresh, monkeypatch):
    # (f) native.supports, called while tracing, reads the status determined so far and never
    # builds: with nothing determined, the dense map traces XLA's form and the status stays
    # undetermined
    calls = []
    monkeypatch.setattr(build, "_build", lambda cxx: calls.append(cxx))
    assert build.peek() is None
    assert native.supports(2, jnp.float32) is False
    psi, x, beta, lp = _problem()
    state = (jnp.zeros((23,), jnp.float32), jnp.zeros((5,), jnp.float32))
    f = jax.jit(lambda p, xx, b, ll: vf.DenseMap().evaluate_warm(p, xx, b, ll, state)[0].psi)
    text = f.trace(psi, x, beta, lp).lower(lowering_platforms=("cpu",)).as_text()
    assert "vaefp_shifted_sums" not in text
    assert build.peek() is None and calls == []


@needs_compiler
def test_check_and_solve_build_before_tracing(fresh, real_library, monkeypatch):
    # (f) DenseMap.check builds (here: a stand-in for the build that returns the loaded kernel),
    # and solve calls it (through prepare) before the first trace asks native.supports
    loaded = (real_library, build._lib)        # the kernel this process has loaded
    events = []

    def fake_build(cxx):
        events.append("build")
        return loaded

    supports = native.supports

    def traced_supports(dim, dtype):
        events.append(("supports", build.peek()))
        return supports(dim, dtype)

    monkeypatch.setattr(build, "_build", fake_build)
    monkeypatch.setattr(native, "supports", traced_supports)
    # maps and problems that never use the kernel do not build it
    vf.DenseMap(kernel="xla").check(23, 5, 2)
    vf.DenseMap(reuse_shifts=False).check(23, 5, 2)
    vf.DenseMap().check(23, 5, 65)
    assert events == [] and build.peek() is None
    vf.DenseMap().check(23, 5, 2)
    assert events == ["build"] and build.peek().available
    # a solve with the status undetermined: built in prepare, before any trace
    monkeypatch.setattr(build, "_cached", None)
    events.clear()
    x = np.asarray(vf.datasets.three_clusters(23, seed=2), np.float32)
    out = vf.solve(x, np.array([0.05, 0.2]), vf.LatentGrid.uniform(5), iteration=vf.Damped.tight())
    assert np.all(np.isfinite(np.asarray(out.psi)))
    assert events[0] == "build" and events.count("build") == 1, events
    traced = [e for e in events if e != "build"]
    assert traced and all(st is not None and st.available for _, st in traced), events


# -- the entry point ---------------------------------------------------------------------------

@needs_compiler
def test_python_m_entry_point(tmp_path, real_library):
    # python -m vaefp_jax.native builds (or finds) the kernel, prints the status line and exits
    # 0; with a refused cache it prints the reason and exits 1
    env = {k: v for k, v in os.environ.items() if k != "VAEFP_JAX_NATIVE"}
    good = subprocess.run([sys.executable, "-m", "vaefp_jax.native"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert good.returncode == 0, (good.stdout, good.stderr[-2000:])
    assert good.stdout.startswith("native kernels: ") and good.stdout.count("\n") == 1
    assert os.path.exists(good.stdout.split(": ", 1)[1].strip())
    bad = tmp_path / "cache"
    _folder(bad, 0o777)
    out = subprocess.run([sys.executable, "-m", "vaefp_jax.native"], capture_output=True, text=True, timeout=300,
                         env={**env, "VAEFP_JAX_CACHE": str(bad)}, cwd=REPO)
    assert out.returncode == 1, (out.stdout, out.stderr[-2000:])
    assert out.stdout == (f"native kernels unavailable: refusing cache folder {bad}: writable by other users "
                          "(mode 0777); remove it or set VAEFP_JAX_CACHE to a folder of your own with mode 0700\n")
    assert not list(bad.iterdir())


def test_ensure_built_is_the_status(fresh, monkeypatch):
    # the public entry that builds ahead of tracing; never raises
    monkeypatch.setenv("VAEFP_JAX_NATIVE", "0")
    st = native.ensure_built()
    assert not st.available and "disabled" in st.reason and native.status() is st
    assert callable(native.ensure_built) and build.__name__ == "vaefp_jax.native.build"
