"""Saved results: a JSON record of what produced a run, and loading a run folder back.

Every saved run (``vaefp sweep``, ``vaefp phase``, :meth:`PhaseResult.save`,
:meth:`SweepRun.save`) is a folder with ``run.json``, the record of
:func:`make_record` (kind, package, JAX and NumPy versions, the machine, the
command line, the data (path, SHA-256, shape, columns, preprocessing), the
grid, the iteration with all its parameters, dtype, seed and β range), and
NumPy arrays beside it. :func:`load` reads either kind back.

A run folder is either complete or clearly incomplete: :func:`begin_run` removes an old
``run.json`` first, every file is written under a temporary name and renamed into place
(:func:`atomic_path`), and ``run.json`` comes last, listing every file with its size and
SHA-256 (:func:`write_record`). :func:`load` refuses, in one line, a folder without
``run.json`` (interrupted while writing) or whose files do not match the list.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import sys

import numpy as np

__all__ = [
    "SweepRun",
    "array_sha256",
    "atomic_path",
    "begin_run",
    "file_sha256",
    "grid_from_record",
    "grid_record",
    "make_record",
    "prepare_out",
    "read_record",
    "write_record",
]

RECORD = "run.json"
FORMAT = 1


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(x) -> str:
    """Hex SHA-256 of an array's float64 C-order bytes (for data that did not come from a file)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x, np.float64)).tobytes()).hexdigest()


def grid_record(grid) -> dict:
    """What rebuilds a :class:`~vaefp_jax.LatentGrid`: its kind, k, dimension and range."""
    rec = {"kind": grid.kind, "k": int(grid.k), "dim": int(grid.dim), "num_tiles": int(grid.num_tiles)}
    if grid.kind == "uniform":
        rec.update(low=float(np.min(grid.lower)), high=float(np.max(grid.upper)))
    else:
        finite = np.asarray(grid.upper)[np.isfinite(grid.upper)]
        rec.update(limit=float(np.max(finite)) if finite.size else None)
    return rec


def grid_from_record(rec: dict):
    """The :class:`~vaefp_jax.LatentGrid` that :func:`grid_record` describes."""
    from vaefp_jax.grid import LatentGrid

    if rec["kind"] == "uniform":
        return LatentGrid.uniform(rec["k"], low=rec["low"], high=rec["high"], dim=rec["dim"])
    return LatentGrid.gaussian(rec["k"], limit=rec["limit"], dim=rec["dim"])


def _strategy(obj) -> dict | None:
    if obj is None:
        return None
    out: dict[str, object] = {"type": type(obj).__name__}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _native_kernels() -> str:
    """Whether this run could use the C++ kernels of :mod:`vaefp_jax.native` (and which
    library), or "not used" when no step map asked for them."""
    from vaefp_jax.native import build

    st = build.peek()
    return "not used" if st is None else str(st)


def make_record(kind: str, *, data: dict, grid=None, iteration=None, step_map=None, dtype=None, seed=None,
                betas=None, **extra) -> dict:
    """The JSON-ready record of a run. ``data``: what the points are (path and SHA-256, or the
    built-in dataset's name and arguments, shape, columns, preprocessing)."""
    import jax
    import jaxlib

    import vaefp_jax

    rec = {
        "kind": kind,
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "versions": {"vaefp_jax": vaefp_jax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "system": platform.platform(),
                    "jax_backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                    "native_kernels": _native_kernels()},
        "data": data,
        "grid": None if grid is None else grid_record(grid),
        "iteration": _strategy(iteration),
        "step_map": _strategy(step_map),
        "dtype": None if dtype is None else np.dtype(dtype).name,
        "seed": seed,
    }
    if betas is not None:
        b = np.asarray(betas, np.float64)
        rec["betas"] = {"num": int(b.size), "min": float(b.min()), "max": float(b.max())}
    rec.update(extra)
    return rec


def prepare_out(path) -> str:
    """Create the output folder ``path`` (and parents) and check it can be written, before any
    compute: a one-line ``ValueError`` if it is a file or not writable."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"output folder {path!r} is an existing file")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".vaefp-write-test")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"cannot write to output folder {path!r}: {err.strerror or err}") from None
    return path


def begin_run(folder) -> str:
    """:func:`prepare_out`, then remove an old ``run.json``: from here until :func:`write_record`
    the folder reads as incomplete, whatever stops the writing."""
    folder = prepare_out(folder)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, RECORD))
    return folder


@contextlib.contextmanager
def atomic_path(path):
    """A temporary name beside ``path`` (hidden, same extension, so that NumPy and matplotlib keep
    it) to write to; renamed to ``path`` in one step when the block ends, removed if it raises
    (also on Ctrl-C): ``path`` is never left half written."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.partial-{os.getpid()}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_record(folder, record: dict, files=()) -> str:
    """``folder/run.json``, written last: strict JSON (NaN and inf as null, so any JSON reader takes
    it), with ``files``, the run's other files (paths), listed by name, size and SHA-256."""
    listed = {os.path.basename(p): {"bytes": os.path.getsize(p), "sha256": file_sha256(p)} for p in files}
    path = os.path.join(folder, RECORD)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(_finite({**record, "files": listed}), f, indent=2, ensure_ascii=False, default=_jsonable,
                  allow_nan=False)
    return path


def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(u) for u in v]
    if isinstance(v, (float, np.floating)) and not np.isfinite(v):
        return None
    return v


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def read_record(folder) -> dict:
    """The record of a complete run folder; a one-line ``ValueError`` for a folder that is not a
    run, was left incomplete (no ``run.json``), or whose files differ from those it lists."""
    folder = os.fspath(folder)
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path):
        if not os.path.isdir(folder):
            raise ValueError(f"{folder!r} is not a saved run (no such folder)")
        if any(f.endswith((".npz", ".csv")) or ".partial-" in f for f in os.listdir(folder)):
            raise ValueError(f"{folder!r} holds an incomplete run (no {RECORD}: it was interrupted or failed while "
                             "writing): run it again")
        raise ValueError(f"{folder!r} is not a saved run (no {RECORD})")
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path!r} is not a readable run record ({err}): run it again") from None
    if rec.get("format", 0) > FORMAT:
        raise ValueError(f"{path!r} was written by a newer vaefp_jax (format {rec['format']} > {FORMAT})")
    for name, want in (rec.get("files") or {}).items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            raise ValueError(f"{folder!r} is incomplete: {name}, listed in {RECORD}, is missing: run it again")
        if os.path.getsize(file) != want["bytes"] or file_sha256(file) != want["sha256"]:
            raise ValueError(f"{folder!r}: {name} differs from the file {RECORD} lists (changed or partly "
                             "written after the run): run it again")
    return rec


def read_run(folder, kind: str, arrays: str) -> tuple[dict, dict]:
    """(record, arrays) of a saved run of ``kind``, its arrays from the ``arrays`` .npz file;
    a one-line ``ValueError`` if ``folder`` holds another kind of run."""
    rec = read_record(folder)
    if rec.get("kind") != kind:
        raise ValueError(f"{os.fspath(folder)!r} holds a {rec.get('kind')!r} run, not a {kind} run")
    with np.load(os.path.join(os.fspath(folder), arrays)) as z:
        return rec, {k: z[k] for k in z.files}


@dataclasses.dataclass(frozen=True, eq=False)
class SweepRun:
    """A β sweep without derivatives (``vaefp sweep``): per-β arrays, leading axis B, and its
    record; ``x`` (n, d) the data and ``log_prior`` (K,) the tiles' log π_a. ``status`` holds
    :class:`~vaefp_jax.Status` codes; ``distinct`` counts fixed points closer than ``merge_tol`` as
    one."""

    beta: np.ndarray
    u: np.ndarray
    steps: np.ndarray
    status: np.ndarray
    residual: np.ndarray
    distinct: np.ndarray
    psi: np.ndarray
    merge_tol: float
    record: dict
    x: np.ndarray
    log_prior: np.ndarray

    ARRAYS = ("beta", "u", "steps", "status", "residual", "distinct", "psi", "x", "log_prior")

    @property
    def converged(self) -> np.ndarray:
        return self.status == 0

    def save(self, folder) -> list[str]:
        """Write ``run.json``, ``sweep.npz`` (all arrays) and ``sweep.csv`` (per β) into ``folder``."""
        folder = begin_run(folder)
        npz = os.path.join(folder, "sweep.npz")
        with atomic_path(npz) as tmp:
            np.savez_compressed(tmp, merge_tol=self.merge_tol, **{k: getattr(self, k) for k in self.ARRAYS})
        table = os.path.join(folder, "sweep.csv")
        with atomic_path(table) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["beta", "u", "steps", "status", "converged", "residual", "distinct_fixed_points"])
            for j, b in enumerate(self.beta):
                w.writerow([repr(float(b)), repr(float(self.u[j])), int(self.steps[j]), int(self.status[j]),
                            bool(self.status[j] == 0), repr(float(self.residual[j])), int(self.distinct[j])])
        return [write_record(folder, {**self.record, "kind": "sweep"}, [npz, table]), npz, table]

    @classmethod
    def load(cls, folder) -> SweepRun:
        rec, a = read_run(folder, "sweep", "sweep.npz")
        return cls(merge_tol=float(a["merge_tol"]), record=rec, **{k: a[k] for k in cls.ARRAYS})

    def __repr__(self):
        return (f"SweepRun({self.beta.size} β, converged {int(self.converged.sum())}, "
                f"psi {'×'.join(map(str, self.psi.shape))})")
