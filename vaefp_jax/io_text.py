"""Parsing a delimited text table (.csv / .tsv / .txt) into fields, with what was inferred.

:func:`parse_text` turns the file's bytes into a :class:`TextGrid` of string fields with their
line numbers, the column names and the notes on what was inferred (delimiter, header, the
scikit-learn header, decimal commas). :func:`numeric_column` and :func:`label_values` turn one
column into float64 numbers or label strings, with one-line errors naming the line and column.
Only NumPy and the standard library are used (the command line imports this before JAX).
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shlex

import numpy as np

__all__ = ["TextGrid", "label_values", "missing_labels", "numeric_column", "parse_text", "show"]

_DELIMITERS = ("\t", ";", ",")          # in order of preference when several split evenly
_DELIMITER_NAMES = {"\t": "tabs", ";": "';'", ",": "','", None: "whitespace"}
_MISSING = {"", "na", "n/a", "nan", "-nan", "+nan", "null", "none", "?"}
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+([eE][+-]?\d+)?$")
_WHITESPACE_FIELD = re.compile(r'"[^"]*"|\'[^\']*\'|\S+')
_CODE = re.compile(r"[0-9]+")
_SAMPLE = 6                             # lines looked at to choose the delimiter


@dataclasses.dataclass(frozen=True)
class TextGrid:
    """The data rows of a text table as strings.

    ``rows[r][j]`` is field ``j`` of data row ``r``, found on line ``lines[r]`` (1-based);
    ``names[j]`` is the header name of column ``j``, or ``str(j)`` without a header;
    ``classes`` are the class names of a scikit-learn header (its last column holds their
    0-based codes), else None.
    """

    rows: list
    lines: list
    names: tuple
    header: bool
    classes: tuple | None
    decimal_comma: bool
    notes: tuple


def show(text: str, width: int = 40) -> str:
    """``text`` quoted on one line, cut to ``width`` characters."""
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _number(field: str, decimal_comma: bool) -> float | None:
    """The value of ``field``, or None when it is not a number (NaN and inf are numbers here)."""
    if decimal_comma and _DECIMAL_COMMA.match(field):
        field = field.replace(",", ".")
    try:
        return float(field)
    except ValueError:
        return None


def _is_missing(field: str, decimal_comma: bool) -> bool:
    if field.lower() in _MISSING:
        return True
    v = _number(field, decimal_comma)
    return v is not None and not np.isfinite(v)


def _is_text(field: str, decimal_comma: bool) -> bool:
    return not _is_missing(field, decimal_comma) and _number(field, decimal_comma) is None


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return [f[1:-1] if f[:1] in "\"'" and f[-1:] == f[:1] and len(f) > 1 else f
                for f in _WHITESPACE_FIELD.findall(line)]
    try:
        fields = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))
    except csv.Error:  # e.g. a NUL byte: split plainly, the field is then reported as text
        fields = line.split(delimiter)
    return [f.strip() for f in fields]


def _choose_delimiter(lines: list[str]) -> str | None:
    """The first of tab, ';', ',' that splits the first lines into one number (> 1) of fields
    (the first line, which may be a scikit-learn header, need only split into > 1); failing
    that (a ragged table), the one found in most and at least half of the first lines; else
    None (whitespace)."""
    sample = lines[1:_SAMPLE] if len(lines) > 1 else lines[:1]
    for d in _DELIMITERS:
        counts = {len(_split(ln, d)) for ln in sample}
        if len(counts) == 1 and counts.pop() > 1 and len(_split(lines[0], d)) > 1:
            return d
    found = {d: sum(len(_split(ln, d)) > 1 for ln in lines[:_SAMPLE]) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: found[d])         # the first of the best, on a tie
    return best if 2 * found[best] >= min(len(lines), _SAMPLE) else None


def _name(field: str) -> str:
    field = field.strip()
    while len(field) > 1 and field[0] in "\"'" and field[-1] == field[0]:
        field = field[1:-1].strip()
    return field


def _sklearn_classes(rows: list[list[str]], decimal_comma: bool) -> tuple | None:
    """The class names when the first row is scikit-learn's ``n_samples,n_features,names…``."""
    if len(rows) < 2 or len(rows[0]) < 3:
        return None
    first, rest = rows[0], rows[0][2:]
    if not (_CODE.fullmatch(first[0]) and _CODE.fullmatch(first[1])):
        return None
    if int(first[0]) != len(rows) - 1 or int(first[1]) != len(rows[1]) - 1:
        return None
    if any(not f for f in rest) or not any(_is_text(f, decimal_comma) for f in rest):
        return None
    return tuple(_name(f) for f in rest)


def _is_header(rows: list[list[str]], decimal_comma: bool) -> bool:
    """Whether the first row names the columns: a text field over a number in the second row
    (or, with a single row, any text field)."""
    first = rows[0]
    if len(rows) == 1:
        return any(_is_text(f, decimal_comma) for f in first)
    second = rows[1]
    return any(_is_text(f, decimal_comma) and j < len(second) and not _is_missing(second[j], decimal_comma)
               and _number(second[j], decimal_comma) is not None for j, f in enumerate(first))


def _header_names(path: str, head: list[str], line: int, rows: list, lines: list) -> tuple:
    if not rows:
        raise ValueError(f"{path}: line {line} is a header ({show(', '.join(head))}) but no data rows follow")
    if len(head) != len(rows[0]):
        raise ValueError(f"{path}: the header on line {line} has {len(head)} names but line {lines[0]} has "
                         f"{len(rows[0])} fields (rows have different numbers of columns)")
    names = [h or str(j) for j, h in enumerate(head)]
    for j, h in enumerate(names):
        if h in names[:j]:
            raise ValueError(f"{path}: the header on line {line} names column {show(h)} twice "
                             f"(indices {names.index(h)} and {j})")
    return tuple(names)


def parse_text(path: str, data: bytes) -> TextGrid:
    """The fields of the text table ``data`` read from ``path`` (named in every error)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}): "
                         "save it as UTF-8") from None
    notes = ["a UTF-8 byte-order mark was skipped"] if data.startswith(b"\xef\xbb\xbf") else []
    raw = text.split("\n") if "\n" in text or "\r" not in text else text.split("\r")
    numbered = [(i + 1, ln.rstrip("\r")) for i, ln in enumerate(raw)]
    numbered = [(i, ln) for i, ln in numbered if ln.strip() and not ln.lstrip().startswith("#")]
    if not numbered:
        raise ValueError(f"{path}: the file is empty (no lines other than blanks and # comments)")
    delimiter = _choose_delimiter([ln for _, ln in numbered])
    decimal_comma = delimiter == ";"
    rows = [_split(ln, delimiter) for _, ln in numbered]
    lines = [i for i, _ in numbered]
    notes.append(f"fields are separated by {_DELIMITER_NAMES[delimiter]}")
    if decimal_comma and any(_DECIMAL_COMMA.match(f) for r in rows for f in r):
        notes.append("numbers with a decimal comma (European CSV) are read with a decimal point: '5,1' is 5.1")

    classes = _sklearn_classes(rows, decimal_comma)
    header = classes is None and _is_header(rows, decimal_comma)
    names = None
    if classes is not None:  # io.read_table notes it, with what it makes of the last column
        rows, lines = rows[1:], lines[1:]
    elif header:
        head, line = [_name(f) for f in rows[0]], lines[0]
        rows, lines = rows[1:], lines[1:]
        names = _header_names(path, head, line, rows, lines)
        notes.append(f"line {line} is a header of {len(names)} column names")
    width = len(rows[0])
    for r, ln in zip(rows, lines):
        if len(r) != width:
            raise ValueError(f"{path}: line {ln} has {len(r)} fields but line {lines[0]} has {width} "
                             "(rows have different numbers of columns)")
    names = names or tuple(str(j) for j in range(width))
    if width > 1 and all(r[-1] == "" for r in rows) and names[-1] == str(width - 1):
        rows, names = [r[:-1] for r in rows], names[:-1]
        notes.append("an empty last column (a delimiter at the end of every line) was dropped")
    return TextGrid(rows, lines, names, header, classes, decimal_comma, tuple(notes))


def numeric_column(grid: TextGrid, j: int, path: str) -> np.ndarray:
    """Column ``j`` of ``grid`` as float64, NaN where a field is missing (empty, NA, NaN, inf, …:
    the caller refuses or drops those rows); a one-line error at its first text field."""
    fields = [r[j] for r in grid.rows]
    if grid.decimal_comma:
        fields = [f.replace(",", ".") if _DECIMAL_COMMA.match(f) else f for f in fields]
    col = f"column {show(grid.names[j])} (index {j})"
    try:
        values = np.array([float(f) for f in fields], dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and np.all(np.isfinite(values)):
        return values
    text = next((r for r, f in enumerate(fields) if _is_text(f, False)), None)
    if text is not None:
        flag = shlex.quote(grid.names[j])
        raise ValueError(f"{path}: {col} is not numeric: line {grid.lines[text]} has {show(grid.rows[text][j])}, "
                         f"not numbers; give it as the label column (--label-column {flag}) "
                         "or leave it out with --columns")
    return np.array([np.nan if _is_missing(f, False) else float(f) for f in fields], dtype=np.float64)


def missing_labels(grid: TextGrid, j: int) -> np.ndarray:
    """(rows,) bool: where label column ``j`` is empty or a missing-value marker (NA, NaN, …)."""
    return np.array([r[j].lower() in _MISSING for r in grid.rows], dtype=bool)


def label_values(grid: TextGrid, j: int) -> np.ndarray:
    """Column ``j`` as label strings; a scikit-learn class column gives the class names."""
    fields = [r[j] for r in grid.rows]
    classes = grid.classes
    if classes is not None and j == len(grid.names) - 1:
        def name(code: str) -> str:
            return classes[int(code)] if _CODE.fullmatch(code) and int(code) < len(classes) else code
        fields = [name(f) for f in fields]
    return np.array(fields, dtype=str)
