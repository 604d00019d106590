"""Reading user data points from .npy / .npz / .csv files."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["load_points"]


def load_points(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Data points of shape (n, d) as float64 from ``path``.

    * ``.npy``: a 2-D numeric array;
    * ``.npz``: the array named ``key``, else ``x`` if present, else the only array;
    * ``.csv`` / ``.txt``: numbers separated by commas (or whitespace), one point
      per row; a first row that is not numeric is taken as a header.

    Raises ``ValueError`` with the reason for anything else.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        arr = _np_load(path)
    elif ext == ".npz":
        z = _np_load(path)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"could not read {path!r} as .npz")
        with z:
            names = list(z.keys())
            if key is not None:
                if key not in names:
                    raise ValueError(f"{path!r} has no array {key!r} (it has {names})")
                name = key
            elif "x" in names:
                name = "x"
            elif len(names) == 1:
                name = names[0]
            else:
                raise ValueError(f"{path!r} holds several arrays {names}: name one (key), or call it 'x'")
            arr = z[name]
    elif ext in (".csv", ".txt"):
        arr = _read_text(path)
    else:
        raise ValueError(f"unsupported data file type {ext!r}: use .npy, .npz or .csv")
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path!r} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise ValueError(f"{path!r} holds a 1-D array of shape {arr.shape}: points must be rows of an (n, d) array")
    if arr.ndim != 2:
        raise ValueError(f"{path!r} must hold an (n, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path!r} holds no points (shape {arr.shape})")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{path!r} has a NaN or inf value (row {bad[0]}, column {bad[1]})")
    return arr


def _np_load(path: str):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # not a NumPy file, truncated, pickled objects
        raise ValueError(f"could not read {path!r} as a NumPy file: {err}") from err


def _read_text(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path!r} is empty")
    rows = []
    for i, line in enumerate(lines):
        fields = [t for t in line.replace(",", " ").split()]
        try:
            rows.append([float(t) for t in fields])
        except ValueError:
            if i == 0:
                continue  # header
            raise ValueError(f"{path!r} line {i + 1}: not numbers: {line[:60]!r}") from None
    if not rows:
        raise ValueError(f"{path!r} has a header but no data rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{path!r}: rows have different numbers of columns {sorted(widths)}")
    return np.array(rows, dtype=np.float64)
