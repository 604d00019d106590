"""Reading user data tables: points ``x`` (n, d) and optional labels from .npy / .npz / text / IDX files.

:func:`read_table` returns a :class:`Table` (the points, the labels, the column names, the file's
sha256 and notes saying what was inferred); :func:`load_points` returns only the points.

* ``.npy``: a 2-D numeric array; its columns are named ``"0"``, ``"1"``, …
* ``.npz``: the array named ``key``, else ``x``, else the only array (other than a label array);
  labels may come from a column of it or from another 1-D array of length n (``label_column="y"``).
* ``.csv`` / ``.tsv`` / ``.txt`` (UTF-8, a byte-order mark is skipped; blank lines and lines
  starting with ``#`` are skipped), parsed by :mod:`vaefp_jax.io_text`:

  - the delimiter is the first of tab, ``;``, ``,`` that splits the first lines into one number
    (> 1) of fields, else whitespace; quoted fields are read as one field; with ``;`` a decimal
    comma (``5,1``) is read as 5.1;
  - the first row is a header when one of its fields is text over a number in the second row;
  - scikit-learn's bundled format (first line ``150,4,setosa,versicolor,virginica``: the number
    of rows, of features, then class names) has no header names, and its last column is the
    label by default, given as the class names.
* MNIST's IDX images files (``….idx3-ubyte``, plain or ``.gz``, recognised by their magic
  number, :mod:`vaefp_jax.mnist`): one point per image, the raw 0–255 pixels flattened
  row-major, columns ``"pixel0"``, …; labels from the IDX labels file named by ``label_column``
  (a path), else the sibling labels file (:func:`vaefp_jax.mnist.idx_labels_path`); ``columns``
  are 0-based pixel indices; IDX has no missing values.

Columns are chosen by header name or 0-based index; every column used as data must be numbers
(a text column must be named as the label column or left out). A row with a missing value (an
empty field, ``NA``, ``NaN``, ``null``, ``?``, inf; in .npy/.npz a NaN or inf) in a column used
(data or label) is refused with one line that counts such rows and names the first few (line or
row, and column), unless ``drop_missing=True`` drops those rows: the labels stay aligned with the
kept rows, and ``Table.dropped_rows`` says which rows went.
Every error is a one-line ``ValueError`` naming the file (and the line and column where one is
at fault). Only NumPy and the standard library are used: the command line imports this before JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Sequence

import numpy as np

from vaefp_jax import mnist
from vaefp_jax.io_text import label_values, missing_labels, numeric_column, parse_text, show

__all__ = ["Table", "load_points", "read_table", "rows_with_missing"]

_TEXT = (".csv", ".tsv", ".txt")
_INDEX = re.compile(r"[+-]?[0-9]+")


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """A data table read by :func:`read_table`.

    **Fields:**
    - ``x``: (n, d) float64, finite — the points, one per row;
    - ``labels``: (n,) strings from the label column (class names for scikit-learn's files), or None;
    - ``columns``: the names of ``x``'s d columns (header names, or the 0-based column index in
      the file, as a string, when there is no header);
    - ``label_name``: the name of the label column (or label array), or None;
    - ``path``: the file read; ``sha256``: hex digest of its bytes;
    - ``notes``: one-line sentences saying what was inferred;
    - ``rows_in_file``: the number of data rows in the file (``x`` has fewer when rows were dropped);
    - ``dropped_rows``: 0-based indices (among the file's data rows) of the rows dropped for a
      missing value (``drop_missing=True``), ascending; row ``k`` of ``x`` is data row
      ``kept_rows[k]`` of the file;
    - ``dropped_lines``: for text files, the 1-based line numbers of those rows, else None.
    """

    x: np.ndarray
    labels: np.ndarray | None
    columns: tuple[str, ...]
    label_name: str | None
    path: str
    sha256: str
    notes: tuple[str, ...]
    rows_in_file: int = 0
    dropped_rows: tuple[int, ...] = ()
    dropped_lines: tuple[int, ...] | None = None

    @property
    def kept_rows(self) -> np.ndarray:
        """(n,) 0-based indices among the file's data rows of the rows of ``x``."""
        return np.setdiff1d(np.arange(self.rows_in_file), np.asarray(self.dropped_rows, int))

    def describe_dropped(self, first: int = 5) -> str:
        """The dropped rows in words: "lines 4, 9 and 2 more" (text files) or "rows 3, 8, …"."""
        if self.dropped_lines is not None:
            return _first("line", self.dropped_lines, first)
        return _first("row", self.dropped_rows, first) + " (0-based)"


def read_table(path: str | os.PathLike, *, columns: str | Sequence[str | int] | None = None,
               label_column: str | int | None = None, key: str | None = None, drop_missing: bool = False) -> Table:
    """The data table in ``path`` (.npy, .npz, .csv, .tsv, .txt, or an IDX images file).

    **Arguments:**
    - ``columns``: the columns of ``x``, by header name or 0-based index (ints, or strings that
      are integers when no name matches), or one comma-separated string ``"a,b,3"``; None: all
      columns but the label column. IDX: 0-based pixel indices only.
    - ``label_column``: the column (name or 0-based index) whose values become ``labels`` and
      which is left out of ``x``; for .npz also the name of another 1-D array of length n; for
      an IDX images file the path of an IDX labels file (relative to the working directory or
      to the images file's folder; default: the sibling labels file, when there is one).
    - ``key``: for .npz, the name of the array of points (refused for IDX).
    - ``drop_missing``: drop the rows with a missing value in a column used (see the module
      docstring) instead of refusing the file.

    **Returns:** a :class:`Table`. Raises a one-line ``ValueError`` naming the file for anything
    it cannot read unambiguously.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"data file {path!r} is a directory")
    ext = os.path.splitext(path)[1].lower()
    idx = mnist.idx_kind(path)
    if idx is None and ext not in _TEXT + (".npy", ".npz"):
        raise ValueError(f"{path}: unsupported data file type {ext!r}: use .npy, .npz, .csv, .tsv, .txt or an "
                         "IDX images file (….idx3-ubyte, plain or .gz)")
    if idx == "labels":
        raise ValueError(f"{path}: is an IDX labels file (magic 0x00000801), not images: give the images file "
                         "(…idx3-ubyte) as the data and this one as the label column (--label-column PATH)")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if not isinstance(drop_missing, bool):
        raise ValueError(f"drop_missing must be True or False, got {drop_missing!r}")
    if idx is not None:
        return _idx_table(path, data, digest, columns, label_column, key)
    if ext in _TEXT:
        table, missing, lines = _text_table(path, data, digest, columns, label_column)
    else:
        table, missing, lines = _array_table(path, data, digest, ext, columns, label_column, key)
    return _drop_missing(table, missing, lines, drop_missing)


def load_points(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Data points of shape (n, d) as float64 from ``path``: ``read_table(path, key=key).x``.

    For a text file with a text column (other than scikit-learn's class column), name it as
    the label column with :func:`read_table`.
    """
    return read_table(path, key=key).x


def _text_table(path, data, digest, columns, label_column):
    """(Table with every row, missing (n, c) bool per row and used column (name, …), line numbers)."""
    grid = parse_text(path, data)
    last = len(grid.names) - 1
    cols, lab = _select(path, grid.names, columns, label_column, last if grid.classes else None)
    x = np.column_stack([numeric_column(grid, j, path) for j in cols])
    notes = list(grid.notes)
    if grid.classes:
        use = ("the last column is the class label" if lab == last else
               "its last column (the class codes) is used as given")
        notes.append(f"first line is a scikit-learn header ({len(grid.rows)} rows, {last} features, classes "
                     f"{', '.join(grid.classes)}): {use}")
    labels = None if lab is None else label_values(grid, lab)
    def where(j, mask):
        return f"column {show(grid.names[j])} (index {j})", mask, [r[j] for r in grid.rows]

    missing = [where(j, ~np.isfinite(x[:, k])) for k, j in enumerate(cols)]
    if labels is not None:
        missing.append(where(lab, missing_labels(grid, lab)))
        present = labels[~missing[-1][1]]
        notes.append(f"labels from column {show(grid.names[lab])} (index {lab}): "
                     f"{len(np.unique(present))} distinct values")
    return _table(path, digest, x, labels, grid.names, cols, lab, notes), missing, list(grid.lines)


def _array_table(path, data, digest, ext, columns, label_column, key):
    notes, label_array, label_name = [], None, None
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 -- not a NumPy file, truncated, pickled objects
        raise ValueError(f"{path}: could not read it as a NumPy {ext} file: {_line(str(err))}") from None
    if ext == ".npz":
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: could not read it as .npz (it holds a single .npy array)")
        with loaded:
            arrays = list(loaded.keys())
            if isinstance(label_column, str) and label_column in arrays and label_column != key:
                label_name, label_array = label_column, _load_member(path, loaded, label_column)
            arr, name = _npz_points(path, loaded, [n for n in arrays if n != label_name], arrays, key)
        notes.append(f"points from array {show(name)} of the archive (arrays: {', '.join(arrays)})")
    elif isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        raise ValueError(f"{path}: could not read it as .npy (it is an .npz archive)")
    else:
        arr = loaded
    arr = _points_array(path, np.asarray(arr))
    names = tuple(str(j) for j in range(arr.shape[1]))
    hint = f" (the archive's arrays: {', '.join(arrays)})" if ext == ".npz" else ""
    cols, lab = _select(path, names, columns, None if label_array is not None else label_column, None, hint)
    if label_array is not None:
        if label_array.shape != (arr.shape[0],):
            raise ValueError(f"{path}: label array {show(label_name)} has shape {label_array.shape}, "
                             f"expected ({arr.shape[0]},) (one label per point)")
        labels = _label_strings(label_array)
        notes.append(f"labels from array {show(label_name)}: {len(np.unique(labels))} distinct values")
    elif lab is not None:
        labels, label_name = _label_strings(arr[:, lab]), names[lab]
        notes.append(f"labels from column {lab}: {len(np.unique(labels))} distinct values")
    else:
        labels = None
    x = arr[:, cols].astype(np.float64)
    missing = [(f"column {j}", ~np.isfinite(x[:, k]), x[:, k]) for k, j in enumerate(cols)]
    table = _table(path, digest, x, labels, names, cols, lab, notes)
    return dataclasses.replace(table, label_name=label_name), missing, None




def _idx_table(path, data, digest, columns, label_column, key) -> Table:
    """The Table of an IDX images file: raw pixels (n, rows·cols) float64, labels from the IDX
    labels file ``label_column`` (a path) or the sibling labels file, or None."""
    if key is not None:
        raise ValueError(f"{path}: key (--key) applies to .npz archives, not to an IDX images file "
                         "(it holds one array)")
    images = mnist.read_idx_images(path)
    n, rows, cols_ = images.shape
    if n == 0 or rows * cols_ == 0:
        raise ValueError(f"{path}: holds no points ({n} images of {rows}×{cols_} pixels)")
    names = tuple(f"pixel{j}" for j in range(rows * cols_))
    gz = data[:2] == b"\x1f\x8b"
    notes = [f"IDX images file{' (gzip)' if gz else ''}: {n} images of {rows}×{cols_} pixels; the points are the raw "
             f"0–255 pixel intensities (not rescaled), flattened row-major (pixel k is row k // {cols_}, column "
             f"k % {cols_})"]
    flat = images.reshape(n, rows * cols_)
    if columns is None:
        x = flat.astype(np.float64)
        picked = list(range(rows * cols_))
    else:
        specs = [c for c in columns.split(",") if c.strip()] if isinstance(columns, str) else list(columns)
        for spec in specs:
            if isinstance(spec, str) and not _INDEX.fullmatch(spec.strip()):
                raise ValueError(f"{path}: an IDX file has no column names ({show(spec)} in columns): give 0-based "
                                 f"pixel indices, 0 to {rows * cols_ - 1} (pixel k is row k // {cols_}, column "
                                 f"k % {cols_})")
        picked, _ = _select(path, names, specs, None, None)
        x = flat[:, picked].astype(np.float64)
        notes.append(f"{len(picked)} of the {rows * cols_} pixels selected by columns")
    lpath, how = mnist.idx_labels_path(path, label_column)
    labels = label_name = None
    if lpath is not None:
        values = mnist.read_idx_labels(lpath)
        if values.shape[0] != n:
            raise ValueError(f"{path} holds {n} images but {lpath} holds {values.shape[0]} labels: the two files do "
                             "not belong together")
        labels, label_name = _label_strings(values), os.path.basename(lpath)
        notes.append(f"labels from {label_name} ({how}): {len(np.unique(labels))} distinct values")
    elif how:
        notes.append(how)
    return Table(x=x, labels=labels, columns=tuple(names[j] for j in picked), label_name=label_name, path=path,
                 sha256=digest, notes=tuple(notes), rows_in_file=n)


def _drop_missing(table: Table, missing: list, lines, drop: bool) -> Table:
    """The table without its rows that have a missing value (``drop``), or a one-line error that
    counts them and names the first few; the table as it is when none has one. ``missing``:
    (column in words, (n,) bool, the column's fields) per column used."""
    n = table.x.shape[0]
    table = dataclasses.replace(table, rows_in_file=n)
    if not missing:
        return table
    mask = np.column_stack([m for _, m, _ in missing])
    place = (lambda r: f"line {lines[r]}") if lines is not None else (lambda r: f"row {r} (0-based)")
    rows, shown = rows_with_missing(
        mask, lambda r, k: f"{place(r)}, {missing[k][0]}: {show(str(missing[k][2][r]))}")
    if rows.size == 0:
        return table
    if not drop:
        raise ValueError(f"{table.path}: {rows.size} of {n} rows have a missing value (empty, NA, NaN or inf): "
                         f"{shown}; drop those rows with --drop-missing (drop_missing=True in Python), fill "
                         "them, or leave those columns out with --columns")
    if rows.size == n:
        raise ValueError(f"{table.path}: every one of the {n} rows has a missing value ({shown}): nothing is "
                         "left after dropping them; leave the emptiest columns out with --columns")
    keep = np.setdiff1d(np.arange(n), rows)
    counts = ", ".join(f"{c}: {int(mask[:, k].sum())}" for k, (c, _, _) in enumerate(missing) if mask[:, k].any())
    note = f"dropped {rows.size} of {n} rows with a missing value (per column: {counts})"
    return dataclasses.replace(
        table, x=table.x[keep], labels=None if table.labels is None else table.labels[keep],
        notes=(*table.notes, note), dropped_rows=tuple(int(r) for r in rows),
        dropped_lines=None if lines is None else tuple(int(lines[r]) for r in rows))


def rows_with_missing(mask: np.ndarray, describe) -> tuple[np.ndarray, str]:
    """(rows, words): the rows of ``mask`` (n, c) with a missing value, ascending, and the first
    three in words, ``describe(row, column)`` for each row's first missing column (then "and N
    more"): what every refusal or drop of rows with missing values says."""
    rows = np.nonzero(mask.any(axis=1))[0]
    words = "; ".join(describe(int(r), int(np.argmax(mask[r]))) for r in rows[:3])
    return rows, words + (f"; and {rows.size - 3} more" if rows.size > 3 else "")


def _first(word: str, values, first: int) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:first])
    return f"{word}{'s' if len(values) > 1 else ''} {head}" + (f" and {len(values) - first} more"
                                                               if len(values) > first else "")


def _npz_points(path, archive, candidates, names, key):
    if key is not None:
        if key not in names:
            raise ValueError(f"{path}: no array {key!r} in the archive (it has {', '.join(names)})")
        name = key
    elif "x" in candidates:
        name = "x"
    elif len(candidates) == 1:
        name = candidates[0]
    else:
        raise ValueError(f"{path}: the archive holds several arrays ({', '.join(names)}): name one (key), "
                         "or call it 'x'")
    return _load_member(path, archive, name), name


def _load_member(path, archive, name) -> np.ndarray:
    try:
        return np.asarray(archive[name])
    except Exception as err:  # noqa: BLE001 -- pickled objects, a damaged member
        raise ValueError(f"{path}: could not read array {name!r}: {_line(str(err))}") from None


def _points_array(path, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path}: must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise ValueError(f"{path}: holds a 1-D array of shape {arr.shape}: points must be rows of an (n, d) array")
    if arr.ndim != 2:
        raise ValueError(f"{path}: must hold an (n, d) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: holds no points (shape {arr.shape})")
    return arr


def _label_strings(values: np.ndarray) -> np.ndarray:
    """Labels as compact strings: ``"0"`` for an integral float, the shortest repr otherwise."""
    if values.dtype.kind == "S":
        return np.array([v.decode("utf-8", "replace") for v in values.tolist()], dtype=str)
    if values.dtype.kind == "f":
        return np.array([str(int(v)) if v.is_integer() else repr(v) for v in values.tolist()], dtype=str)
    return np.array([str(v) for v in values.tolist()], dtype=str)


def _select(path, names, columns, label_column, default_label, hint=""):
    """(indices of x's columns, index of the label column or None)."""
    def one(spec, what):
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            j = int(spec)
        elif isinstance(spec, str) and spec.strip() in names:
            return names.index(spec.strip())
        elif isinstance(spec, str) and _INDEX.fullmatch(spec.strip()):
            j = int(spec.strip())
        elif isinstance(spec, str):
            raise ValueError(f"{path}: no column named {show(spec)} for {what} (the columns are "
                             f"{show(', '.join(names), 60)}){hint}")
        else:
            raise ValueError(f"{path}: {what} must be given by column name or 0-based index, got {show(repr(spec))}")
        if not 0 <= j < len(names):
            raise ValueError(f"{path}: column index {j} for {what} is out of range (the file has {len(names)} "
                             f"columns, indices 0 to {len(names) - 1}){hint}")
        return j

    lab = None if label_column is None else one(label_column, "the label column")
    if columns is None:
        lab = default_label if label_column is None else lab
        cols = [j for j in range(len(names)) if j != lab]
    else:
        if isinstance(columns, str):
            columns = [columns] if columns.strip() in names else [c for c in columns.split(",") if c.strip()]
        cols = [one(c, "columns") for c in columns]
        for i, j in enumerate(cols):
            if j in cols[:i]:
                raise ValueError(f"{path}: column {show(names[j])} (index {j}) is selected twice in columns")
        if lab is not None and lab in cols:
            raise ValueError(f"{path}: column {show(names[lab])} (index {lab}) is both the label column "
                             "and in columns: leave it out of one")
        if label_column is None and default_label is not None and default_label not in cols:
            lab = default_label
    if not cols:
        raise ValueError(f"{path}: no columns are left for the points (the file has {len(names)}, "
                         f"{'none' if lab is None else 'one'} of them the label column)")
    return cols, lab


def _table(path, digest, x, labels, names, cols, lab, notes) -> Table:
    return Table(x=x, labels=labels, columns=tuple(names[j] for j in cols),
                 label_name=None if lab is None else names[lab], path=path, sha256=digest, notes=tuple(notes))


def _line(text: str) -> str:
    return " ".join(text.split())[:200]
