"""Compiling and loading the package's C++ kernels (XLA FFI custom calls) on this machine.

The kernels are compiled on first use, not at install: against the headers of the jaxlib
that will run them (``jax.ffi.include_dir()``; a handler built against another jaxlib's FFI
headers is not guaranteed to load), for this CPU (``-march=native``), with the C++ compiler
found as ``$CXX``, ``c++``, ``g++`` or ``clang++``. The shared library is cached under
``$VAEFP_JAX_CACHE`` (default ``$XDG_CACHE_HOME/vaefp_jax``, else ``~/.cache/vaefp_jax``),
named by a hash of the source, the compiler and its version, the flags, jaxlib's version
and the CPU's flags, so that a change of any of them builds anew and concurrent processes
(pytest-xdist workers) agree on the file, which is written under a temporary name and then
renamed into place.

Where there is no compiler, the build fails or ``VAEFP_JAX_NATIVE=0`` is set, :func:`status`
says why and the step maps use their XLA form (same values to rounding, slower on CPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

__all__ = ["NativeStatus", "status", "peek", "library", "cache_dir", "compiler", "FLAGS", "BUILD_TIMEOUT_S"]

SOURCES = ("shifted_map.cc",)
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fno-math-errno", "-fPIC", "-shared", "-w")
BUILD_TIMEOUT_S = 300          # a compile that takes longer is abandoned (XLA's form is used)

_lock = threading.Lock()
_cached: "NativeStatus | None" = None
_lib = None
_registered = False


class NativeStatus(NamedTuple):
    """``available``: whether the kernels are built and loaded; ``reason``: why not (one line),
    or where the library is."""

    available: bool
    reason: str

    def __str__(self):
        return ("native kernels: " + self.reason) if self.available else ("native kernels unavailable: " + self.reason)


def cache_dir() -> Path:
    env = os.environ.get("VAEFP_JAX_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaefp_jax"


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


def _build(cxx: str) -> Path:
    import jax
    import jaxlib

    here = Path(__file__).parent
    sources = [here / name for name in SOURCES]
    include = jax.ffi.include_dir()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256()
    for part in [*(s.read_bytes() for s in sources), cxx.encode(), version.encode(), " ".join(FLAGS).encode(),
                 jaxlib.__version__.encode(), _cpu_flags().encode(), platform.machine().encode()]:
        key.update(part)
        key.update(b"\0")
    name = f"vaefp_native-{key.hexdigest()[:20]}.so"
    for directory in (cache_dir(), Path(tempfile.gettempdir()) / f"vaefp_jax-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        target = directory / name
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
            os.close(fd)
        except OSError:
            continue
        try:
            cmd = [cxx, *FLAGS, "-I", include, *map(str, sources), "-o", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if done.returncode != 0:
                lines = [ln for ln in done.stderr.splitlines() if "error" in ln] or done.stderr.splitlines() or ["?"]
                raise RuntimeError(f"{Path(cxx).name} failed: {lines[0].strip()}")
            os.replace(tmp, target)
            return target
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError(f"no writable cache directory ({cache_dir()} or the temporary directory)")


def status() -> NativeStatus:
    """Build (once per process; cached on disk) and load the kernels; say whether they are
    available. Never raises: a failure is the returned reason."""
    global _cached, _lib
    with _lock:
        if _cached is not None:
            return _cached
        if os.environ.get("VAEFP_JAX_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _cached = NativeStatus(False, "disabled by VAEFP_JAX_NATIVE")
            return _cached
        cxx = compiler()
        if cxx is None:
            why = f"the C++ compiler $CXX={os.environ['CXX']!r} is not found" if os.environ.get("CXX") else \
                "no C++ compiler (c++, g++ or clang++) on the PATH"
            _cached = NativeStatus(False, why)
            return _cached
        try:
            path = _build(cxx)
            try:
                _lib = ctypes.cdll.LoadLibrary(str(path))
            except OSError:              # a cached library that does not load: build it again, once
                path.unlink(missing_ok=True)
                path = _build(cxx)
                _lib = ctypes.cdll.LoadLibrary(str(path))
            _register(_lib)
            _cached = NativeStatus(True, str(path))
        except Exception as err:  # noqa: BLE001 -- any failure is a reason, never an exception
            text = str(err).splitlines()[0] if str(err) else ""
            _cached = NativeStatus(False, f"{type(err).__name__}: {text}" if text else type(err).__name__)
        return _cached


def peek() -> NativeStatus | None:
    """The status if this process has already determined it (a step map asked), else None:
    for records of a run, without building anything."""
    return _cached


def _register(lib) -> None:
    global _registered
    import jax

    if _registered:
        return
    _registered = True
    for suffix in ("F32", "F64"):
        jax.ffi.register_ffi_target(f"vaefp_shifted_sums_{suffix.lower()}",
                                    jax.ffi.pycapsule(getattr(lib, f"VaefpShiftedSums{suffix}")), platform="cpu")


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
