"""Build the packaged 40-exemplar MNIST subset used for Figure 1.

Reads the gzip IDX test files (by default from ``/work/shared/data/mnist``),
takes the first ``per_digit`` test images of each digit 0–9 in test-set order,
and writes

* ``vaefp_jax/data/mnist40.npz`` with ``images`` uint8 (40, 28, 28),
  ``labels`` uint8 (40,) and ``indices`` int64 (40,) (positions in the test set);
* ``vaefp_jax/data/MNIST_ATTRIBUTION.md`` (source, licence, files, indices).

Usage::

    python scripts/build_mnist_subset.py [--mnist-dir DIR] [--per-digit 4]
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib

import numpy as np

from vaefp_jax.mnist import read_idx, select_first_per_digit

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "vaefp_jax" / "data"
IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


def _md5(path: pathlib.Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def attribution_text(images_path: pathlib.Path, labels_path: pathlib.Path,
                     labels: np.ndarray, indices: np.ndarray, per_digit: int) -> str:
    rows = "\n".join(
        f"| {d} | {', '.join(str(int(i)) for i in indices[labels == d])} |" for d in range(10)
    )
    return f"""# MNIST subset: attribution

`mnist40.npz` holds {len(indices)} handwritten digits ({per_digit} per digit 0–9) from the
MNIST database by **Yann LeCun, Corinna Cortes and Christopher J.C. Burges**
(<http://yann.lecun.com/exdb/mnist/>).

Licence: Creative Commons Attribution-Share Alike 3.0 (CC BY-SA 3.0), as commonly
stated for the MNIST database. The subset is redistributed under the same licence.

## Source

- Images: `{images_path.name}` (MD5 of the .gz: `{_md5(images_path)}`)
- Labels: `{labels_path.name}` (MD5 of the .gz: `{_md5(labels_path)}`)
- Selection: the first {per_digit} images of each digit in test-set order
  (0-based indices into the 10,000-image test set), unmodified uint8 pixels.

| digit | test-set indices |
|---|---|
{rows}

Regenerate with `python scripts/build_mnist_subset.py`.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", type=pathlib.Path, default=pathlib.Path("/work/shared/data/mnist"))
    parser.add_argument("--per-digit", type=int, default=4)
    parser.add_argument("--out-dir", type=pathlib.Path, default=DATA_DIR)
    args = parser.parse_args(argv)

    images_path, labels_path = args.mnist_dir / IMAGES, args.mnist_dir / LABELS
    images, labels = read_idx(images_path, labels_path)
    indices = select_first_per_digit(labels, args.per_digit)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out_dir / "mnist40.npz",
        images=images[indices].astype(np.uint8),
        labels=labels[indices].astype(np.uint8),
        indices=indices.astype(np.int64),
    )
    (args.out_dir / "MNIST_ATTRIBUTION.md").write_text(
        attribution_text(images_path, labels_path, labels[indices], indices, args.per_digit)
    )
    print(f"wrote {len(indices)} exemplars to {args.out_dir / 'mnist40.npz'}")


if __name__ == "__main__":
    main()
