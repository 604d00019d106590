"""MNIST exemplars for the Figure 1 experiment.

Two entry points:

* :func:`load_exemplars` — the packaged 40-image subset (the first 4 test images
  of each digit, see ``vaefp_jax/data/MNIST_ATTRIBUTION.md``); no download needed.
* :func:`load_idx` — the same selection (or a seeded random one) from full IDX
  files, gzip-compressed (``.gz``) or raw.

Both return an :class:`Exemplars` (unpackable as ``images, labels, indices``)
with images as float32 (n, 784) in [0, 1], ordered by digit and then by
position in the source file.

The IDX parsing itself (:func:`read_idx_images`, :func:`read_idx_labels`, :func:`idx_magic`; raw
uint8, any image size) is also what :func:`vaefp_jax.io.read_table` uses for ``--data FILE.idx3-ubyte``.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import io
import os
import re
import zlib
from typing import Iterator

import numpy as np

from vaefp_jax import _validate
from vaefp_jax.io_text import show

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "Exemplars", "idx_kind", "idx_labels_path", "idx_magic", "load_exemplars",
           "load_idx", "read_idx", "read_idx_images", "read_idx_labels", "select_first_per_digit",
           "select_random_per_digit"]

IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
PACKAGED_FILE = "mnist40.npz"


@dataclasses.dataclass(frozen=True)
class Exemplars:
    """A labelled set of MNIST images.

    images: float32 (n, 784), pixels/255 in [0, 1], row-major 28×28.
    labels: int32 (n,), digits 0–9.
    indices: int64 (n,), positions of the images in their source IDX file.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.images, self.labels, self.indices))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _open(path: str | os.PathLike) -> bytes:
    """The bytes of an IDX file, decompressed when it is gzip (recognised by its first two bytes,
    not its name). One-line ValueError naming the file when it is missing or a damaged gzip."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"IDX file not found: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not an IDX file")
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as err:   # gzip.BadGzipFile is an OSError
        text = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{path}: could not decompress it as gzip (truncated or corrupt): {text}") from None


def _header(buf: bytes, path, magic: int, ndim: int) -> tuple[int, ...]:
    need = 4 * (1 + ndim)
    if len(buf) < need:
        raise ValueError(f"{path}: too short for an IDX header ({len(buf)} bytes)")
    got = int.from_bytes(buf[0:4], "big")
    if got != magic:
        raise ValueError(
            f"{path}: bad IDX magic number {got} (0x{got:08x}), expected {magic} (0x{magic:08x})"
        )
    return tuple(int.from_bytes(buf[4 * k:4 * k + 4], "big") for k in range(1, ndim + 1))


def idx_magic(path: str | os.PathLike) -> int | None:
    """The magic number (first 4 bytes, big-endian) of ``path``, gzip-compressed or not; None when
    the file is missing, shorter than 4 bytes or a damaged gzip. Cheap: reads only the head."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] == b"\x1f\x8b":
                f.seek(0)
                with gzip.open(f, "rb") as g:
                    head = g.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    return int.from_bytes(head, "big") if len(head) == 4 else None


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """The uint8 images (N, rows, cols) of an IDX images file (magic 0x00000803), gzip or raw, of
    any size. One-line ValueError naming the file on a bad magic number or a truncated file."""
    buf = _open(path)
    n, rows, cols = _header(buf, path, IMAGES_MAGIC, 3)
    if len(buf) - 16 != n * rows * cols:
        raise ValueError(f"{path}: header says {n}×{rows}×{cols} pixels, file holds {len(buf) - 16} bytes")
    return np.frombuffer(buf, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """The uint8 labels (N,) of an IDX labels file (magic 0x00000801), gzip or raw. One-line
    ValueError naming the file on a bad magic number or a truncated file."""
    buf = _open(path)
    (m,) = _header(buf, path, LABELS_MAGIC, 1)
    if len(buf) - 8 != m:
        raise ValueError(f"{path}: header says {m} labels, file holds {len(buf) - 8} bytes")
    return np.frombuffer(buf, np.uint8, offset=8)


def read_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair of MNIST IDX files.

    Returns uint8 images (N, rows, cols) and uint8 labels (N,). Raises ValueError
    on a bad magic number, a truncated file, mismatched counts, images that are
    not 28×28, or labels outside 0–9.
    """
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    n, rows, cols = images.shape
    if (rows, cols) != (28, 28):
        raise ValueError(f"{images_path}: images are {rows}×{cols}, expected 28×28")
    if n != labels.shape[0]:
        raise ValueError(f"{n} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be digits 0–9, found {labels.max()}")
    return images, labels


def _check_per_digit(labels: np.ndarray, per_digit: int) -> None:
    _validate.check_int("per_digit", per_digit)
    counts = np.bincount(labels, minlength=10)
    if counts.min() < per_digit:
        raise ValueError(f"per_digit={per_digit} but digit {int(counts.argmin())} has only {int(counts.min())} images")


def select_first_per_digit(labels: np.ndarray, per_digit: int) -> np.ndarray:
    """Indices (10·per_digit,) of the first ``per_digit`` items of each digit, grouped by digit."""
    labels = np.asarray(labels)
    _check_per_digit(labels, per_digit)
    return np.concatenate([np.flatnonzero(labels == d)[:per_digit] for d in range(10)]).astype(np.int64)


def select_random_per_digit(labels: np.ndarray, per_digit: int, seed: int) -> np.ndarray:
    """Indices (10·per_digit,) of ``per_digit`` items of each digit drawn without
    replacement with ``numpy.random.default_rng(seed)``; grouped by digit, sorted within."""
    labels = np.asarray(labels)
    _check_per_digit(labels, per_digit)
    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.choice(np.flatnonzero(labels == d), per_digit, replace=False)) for d in range(10)]
    return np.concatenate(picks).astype(np.int64)


def _as_exemplars(images_u8: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Exemplars:
    images = images_u8.reshape(images_u8.shape[0], -1).astype(np.float32) / np.float32(255.0)
    return Exemplars(images=images, labels=np.asarray(labels, np.int32), indices=np.asarray(indices, np.int64))


def load_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike,
             per_digit: int | None = 4, seed: int | None = None) -> Exemplars:
    """Exemplars from full IDX files (gzip or raw).

    per_digit: images per digit; ``None`` keeps every image in file order.
    seed: ``None`` takes the first ``per_digit`` images of each digit (the
        packaged subset is ``load_idx(t10k-images, t10k-labels)``); an integer
        draws them at random, reproducibly.
    Returns images float32 (10·per_digit, 784) in [0, 1], labels, indices.
    """
    images, labels = read_idx(images_path, labels_path)
    if per_digit is None:
        return _as_exemplars(images, labels, np.arange(labels.shape[0]))
    idx = (select_first_per_digit(labels, per_digit) if seed is None
           else select_random_per_digit(labels, per_digit, seed))
    return _as_exemplars(images[idx], labels[idx], idx)


def load_exemplars() -> Exemplars:
    """The packaged subset: images float32 (40, 784) in [0, 1], labels int32 (40,)
    (4 of each digit, grouped by digit), indices int64 (40,) into the MNIST test set."""
    raw = importlib.resources.files("vaefp_jax").joinpath("data", PACKAGED_FILE).read_bytes()
    with np.load(io.BytesIO(raw)) as f:
        return _as_exemplars(f["images"], f["labels"], f["indices"])


IDX_NAME = re.compile(r"idx[0-9]+-ubyte(\.gz)?$", re.IGNORECASE)
IDX_SIBLINGS = (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1"))


def idx_kind(path: str) -> str | None:
    """"images" / "labels" for an IDX file by its magic number (gzip or not); "images" also for a
    file named like one (…idx3-ubyte) whose magic is wrong, so that its error says so; else None."""
    magic = idx_magic(path)
    if magic == IMAGES_MAGIC:
        return "images"
    if magic == LABELS_MAGIC:
        return "labels"
    return "images" if IDX_NAME.search(os.path.basename(path)) else None


def idx_labels_path(path: str, label_column) -> tuple[str | None, str]:
    """(the labels file or None, how it was found — or, when none, a note saying so, or "")."""
    if label_column is not None:
        if not isinstance(label_column, (str, os.PathLike)):
            raise ValueError(f"{path}: for an IDX images file the label column is the path of an IDX labels file "
                             f"(…idx1-ubyte[.gz]), got {show(repr(label_column))}")
        given = os.fspath(label_column)
        for cand in (given, os.path.join(os.path.dirname(path), given)):
            if os.path.isfile(cand):
                return cand, "the label column"
        raise ValueError(f"{path}: for an IDX images file the label column is the path of an IDX labels file "
                         f"(…idx1-ubyte[.gz]); no file {show(given)} (looked in the working directory and the "
                         "images file's folder)")
    folder, base = os.path.split(path)
    for a, b in IDX_SIBLINGS:
        if a in base:
            name = base.replace(a, b)
            stem = name[:-3] if name.lower().endswith(".gz") else name
            tried = [name, stem if stem != name else name + ".gz"]
            for cand in tried:
                if os.path.isfile(os.path.join(folder, cand)):
                    return os.path.join(folder, cand), "the images file's sibling labels file"
            return None, (f"no labels: no sibling labels file ({' or '.join(tried)}) next to it; name one with "
                          "--label-column PATH (label_column=)")
    return None, ""
