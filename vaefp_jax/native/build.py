"""Compiling and loading the package's C++ kernels (XLA FFI custom calls) on this machine.

The kernels are compiled on first use, not at install: against the headers of the jaxlib
that will run them (``jax.ffi.include_dir()``; a handler built against another jaxlib's FFI
headers is not guaranteed to load), for this CPU (``-march=native``), with the C++ compiler
found as ``$CXX``, ``c++``, ``g++`` or ``clang++``. The shared library is cached under
``$VAEFP_JAX_CACHE`` (default ``$XDG_CACHE_HOME/vaefp_jax``, else ``~/.cache/vaefp_jax``),
named by a hash of the source, the compiler and its version, the flags, jaxlib's version
and the CPU's flags (:func:`library_name`), so that a change of any of them builds anew and
concurrent processes (pytest-xdist workers) agree on the file, which is written under a
temporary name and then renamed into place.

When it is built. :func:`ensure_built` (alias :func:`status`) builds or loads the kernels
once per process; :meth:`vaefp_jax.maps.DenseMap.check` calls it (``kernel="auto"`` on a CPU
backend, or ``kernel="native"``), and :func:`vaefp_jax.engine.solve.prepare` calls ``check``
before anything is traced. Tracing never compiles: :func:`vaefp_jax.native.supports` only
reads the status already determined (:func:`peek`) and, where nothing has determined it,
answers no (XLA's form: the same values to rounding). ``python -m vaefp_jax.native`` builds
ahead of time and prints the status line (exit status 0 where the kernels are available).

The cache's safety rules (in full, with the reasons: docs/native_cache.md). A library is
loaded only from a folder owned by the current user with no permission bits for group or
others, checked on a descriptor every time; a folder this package creates gets mode 0700; one
of the user's that only others' read bits spoil (0755) is tightened to 0700; one that others
can write into, or that another user owns, is REFUSED. A library file must be a regular file
of the user's that others cannot write, opened with ``O_NOFOLLOW`` and loaded through that
descriptor (``/proc/self/fd``) where it can be. A refusal is final: :func:`status` says why in
one line and the step maps use XLA's form. The fallback ``<tmp>/vaefp_jax-<uid>``
(:func:`fallback_dir`) serves only where the configured folder cannot be created at all, under
the same rules.

Where there is no compiler, the build fails or ``VAEFP_JAX_NATIVE=0`` is set, :func:`status`
says why and the step maps use their XLA form (same values to rounding, slower on CPU).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

__all__ = ["NativeStatus", "InsecureCache", "status", "ensure_built", "peek", "library", "library_name", "cache_dir",
           "fallback_dir", "compiler", "FLAGS", "BUILD_TIMEOUT_S"]

SOURCES = ("shifted_map.cc",)
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fno-math-errno", "-fPIC", "-shared", "-w")
BUILD_TIMEOUT_S = 300          # a compile that takes longer is abandoned (XLA's form is used)
HINT = "remove it or set VAEFP_JAX_CACHE to a folder of your own with mode 0700"

_lock = threading.RLock()
_cached: "NativeStatus | None" = None
_lib = None
_registered = False
_loaded_fds: list[int] = []    # descriptors libraries were loaded through (/proc/self/fd/N), kept open


class NativeStatus(NamedTuple):
    """``available``: whether the kernels are built and loaded; ``reason``: why not (one line),
    or where the library is."""

    available: bool
    reason: str

    def __str__(self):
        return ("native kernels: " + self.reason) if self.available else ("native kernels unavailable: " + self.reason)


class InsecureCache(Exception):
    """A cache folder or library file that is not safe to load from (the message: one line)."""


class _Unusable(Exception):
    """A cache folder that cannot be created or written (the next one is tried)."""


def _current_uid() -> int:
    """The user the cache must belong to (a function, so that tests can pretend to be another)."""
    return os.getuid()


def cache_dir() -> Path:
    """The configured cache folder: ``$VAEFP_JAX_CACHE``, else ``$XDG_CACHE_HOME/vaefp_jax``,
    else ``~/.cache/vaefp_jax``."""
    env = os.environ.get("VAEFP_JAX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaefp_jax"


def fallback_dir() -> Path:
    """The folder used where :func:`cache_dir` cannot be created or written:
    ``<tempfile.gettempdir()>/vaefp_jax-<uid>`` (held to the same checks)."""
    return Path(tempfile.gettempdir()) / f"vaefp_jax-{_current_uid()}"


def compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` if set (None if it is not found), else the first of
    c++, g++, clang++ on the PATH."""
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _sources() -> list[Path]:
    here = Path(__file__).parent
    return [here / name for name in SOURCES]


def library_name(cxx: str) -> str:
    """The file name of the library built by ``cxx`` (``vaefp_native-<hash>.so``): a hash of
    the sources, the compiler's path and version, the flags, jaxlib's version and the CPU."""
    import jaxlib

    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256()
    for part in [*(s.read_bytes() for s in _sources()), cxx.encode(), version.encode(), " ".join(FLAGS).encode(),
                 jaxlib.__version__.encode(), _cpu_flags().encode(), platform.machine().encode()]:
        key.update(part)
        key.update(b"\0")
    return f"vaefp_native-{key.hexdigest()[:20]}.so"


# -- the checks ------------------------------------------------------------------------------

def _refusal(kind: str, path, why: str, note: str = "") -> InsecureCache:
    return InsecureCache(f"refusing {kind} {path}{note}: {why}; {HINT}")


def _mode(st) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}"


def _open_folder(path: Path, note: str = "") -> int:
    """Create (mode 0700) or check the cache folder and return an open descriptor of it.
    ``InsecureCache`` where it is not safe to use (see the module docstring), ``OSError``
    where it cannot be created or opened."""
    uid = _current_uid()
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
        created = True
    except OSError:
        if not os.path.lexists(path):
            raise
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        raise _refusal("cache folder", path, f"a symbolic link owned by another user (uid {link.st_uid})", note)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
    except NotADirectoryError:
        raise _refusal("cache folder", path, "not a directory", note) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise _refusal("cache folder", path, "not a directory", note)
        if st.st_uid != uid:
            raise _refusal("cache folder", path, f"owned by another user (uid {st.st_uid})", note)
        if st.st_mode & 0o022:
            raise _refusal("cache folder", path, f"writable by other users ({_mode(st)})", note)
        if (created and stat.S_IMODE(st.st_mode) != 0o700) or st.st_mode & 0o077:
            # ours, and nobody else could write into it: make it private (0755 from earlier
            # versions of this package; 0700 & ~umask where we created it)
            try:
                os.fchmod(fd, 0o700 if created else stat.S_IMODE(st.st_mode) & ~0o077)
            except OSError as err:
                raise _refusal("cache folder", path, f"readable by other users ({_mode(st)}) and cannot be made "
                                                     f"private ({err.strerror})", note) from None
            st = os.fstat(fd)
            if st.st_mode & 0o077 or st.st_uid != uid:
                raise _refusal("cache folder", path, f"cannot be made private ({_mode(st)})", note)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_library(folder: Path, dfd: int, name: str) -> int | None:
    """An open descriptor of the library ``name`` in the checked folder (descriptor ``dfd``),
    None where there is none; ``InsecureCache`` where the file is not safe to load."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    path = folder / name
    try:
        if os.open in os.supports_dir_fd:
            fd = os.open(name, flags, dir_fd=dfd)
        else:
            fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
            raise _refusal("cached library", path, "a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refusal("cached library", path, "not a regular file")
        if st.st_uid != _current_uid():
            raise _refusal("cached library", path, f"owned by another user (uid {st.st_uid})")
        if st.st_mode & 0o022:
            raise _refusal("cached library", path, f"writable by other users ({_mode(st)})")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _dlopen(fd: int, path: Path):
    """Load the checked file open as ``fd``: through ``/proc/self/fd/<fd>`` where there is one
    (the very file checked; the descriptor is kept open, so that the name stays unique in
    the process), else by its path (in a folder only this user can write into)."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        lib = ctypes.CDLL(proc)
        _loaded_fds.append(fd)
        return lib
    lib = ctypes.CDLL(str(path))
    os.close(fd)
    return lib


# -- building ---------------------------------------------------------------------------------

def _compile(cxx: str, output: str) -> None:
    """Compile the kernels into the shared library ``output``; ``RuntimeError`` with the
    compiler's first error line where it fails."""
    import jax

    cmd = [cxx, *FLAGS, "-I", jax.ffi.include_dir(), *map(str, _sources()), "-o", output]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if "error" in ln] or done.stderr.splitlines() or ["?"]
        raise RuntimeError(f"{Path(cxx).name} failed: {lines[0].strip()}")


def _compile_into(folder: Path, name: str, cxx: str, note: str) -> None:
    """Build the library into the checked folder under a temporary name, then rename it."""
    dfd = _open_folder(folder, note)          # checked again right before writing
    os.close(dfd)
    try:
        fd, tmp = tempfile.mkstemp(suffix=".so", prefix=".build-", dir=folder)
        os.close(fd)
    except OSError as err:
        raise _Unusable(f"cannot write into {folder} ({err.strerror or err})") from None
    try:
        _compile(cxx, tmp)
        os.chmod(tmp, 0o700)                  # the linker recreates the file with 0777 & ~umask
        os.replace(tmp, folder / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_in(folder: Path, name: str, cxx: str, note: str = ""):
    """(path, library) from ``folder``: the cached library if there is one, else built there;
    a cached one that does not load is built again, once."""
    for attempt in range(2):
        try:
            dfd = _open_folder(folder, note)
        except OSError as err:
            raise _Unusable(f"cannot create {folder} ({err.strerror or err})") from None
        try:
            fd = _open_library(folder, dfd, name)
        finally:
            os.close(dfd)
        built = fd is None
        if fd is None:   # i.e. built
            _compile_into(folder, name, cxx, note)
            dfd = _open_folder(folder, note)  # checked again right before loading
            try:
                fd = _open_library(folder, dfd, name)
            finally:
                os.close(dfd)
            if fd is None:
                raise RuntimeError(f"the library built in {folder} is gone")
        try:
            return folder / name, _dlopen(fd, folder / name)
        except OSError as err:
            os.close(fd)
            if built or attempt:
                raise RuntimeError(f"{folder / name} does not load: {str(err).splitlines()[0]}") from None
            (folder / name).unlink(missing_ok=True)   # a cached library that does not load
    raise AssertionError("unreachable")


def _build(cxx: str):
    """(path, library): the kernels built by ``cxx`` or found in the cache, loaded, per the
    rules of the module docstring. ``InsecureCache`` where a folder or file is refused."""
    name = library_name(cxx)
    configured = cache_dir()
    try:
        return _build_in(configured, name, cxx)
    except _Unusable as err:
        first = err
    fallback = fallback_dir()
    try:
        return _build_in(fallback, name, cxx, note=f" (the fallback: {first})")
    except _Unusable as err:
        raise RuntimeError(f"no writable cache folder: {first}; {err}") from None


def _determine() -> NativeStatus:
    global _lib
    if os.environ.get("VAEFP_JAX_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return NativeStatus(False, "disabled by VAEFP_JAX_NATIVE")
    if not hasattr(os, "getuid"):
        return NativeStatus(False, "the kernels' cache needs a POSIX system (user ids)")
    cxx = compiler()
    if cxx is None:
        why = f"the C++ compiler $CXX={os.environ['CXX']!r} is not found" if os.environ.get("CXX") else \
            "no C++ compiler (c++, g++ or clang++) on the PATH"
        return NativeStatus(False, why)
    try:
        path, lib = _build(cxx)
        _register(lib)
        _lib = lib
        return NativeStatus(True, str(path))
    except InsecureCache as err:
        return NativeStatus(False, str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001 -- any failure is a reason, never an exception
        text = str(err).splitlines()[0] if str(err) else ""
        return NativeStatus(False, f"{type(err).__name__}: {text}" if text else type(err).__name__)


def status() -> NativeStatus:
    """Build (once per process; cached on disk) and load the kernels; say whether they are
    available. Never raises: a failure, or a refused cache, is the returned reason."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = _determine()
        return _cached


def ensure_built() -> NativeStatus:
    """Build the kernels now if this process has not yet (or find them in the cache) and load
    them: :func:`status`, named for calls made ahead of tracing (``DenseMap.check``,
    ``python -m vaefp_jax.native``)."""
    return status()


def peek() -> NativeStatus | None:
    """The status if this process has already determined it, else None; never builds: what
    tracing (:func:`vaefp_jax.native.supports`) and the records of a run read."""
    return _cached


def _register(lib) -> None:
    global _registered
    import jax

    if _registered:
        return
    targets = {suffix: jax.ffi.pycapsule(getattr(lib, f"VaefpShiftedSums{suffix}")) for suffix in ("F32", "F64")}
    for suffix, capsule in targets.items():
        jax.ffi.register_ffi_target(f"vaefp_shifted_sums_{suffix.lower()}", capsule, platform="cpu")
    _registered = True


def library():
    """The loaded library (ctypes), building it if needed; ``RuntimeError`` with the reason if
    it is not available."""
    st = status()
    if not st.available:
        raise RuntimeError(str(st))
    return _lib


def _reset_for_tests() -> None:
    """Forget this process's status (tests of the build's failure paths). The FFI targets stay
    registered."""
    global _cached
    with _lock:
        _cached = None
