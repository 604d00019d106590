"""C++ kernels for the CPU (XLA FFI custom calls), compiled on first use (:mod:`.build`).

* :func:`evaluate_shifted`: eq. (14)–(15) with the previous evaluation's normalisers as
  shifts, each exponential computed and read once (:mod:`.shifted`); what
  :class:`vaefp_jax.maps.DenseMap` runs inside an iteration on CPU.
* :func:`ensure_built`: build (or find in the cache) and load the kernels now, before
  anything is traced; ``DenseMap.check`` calls it, and ``python -m vaefp_jax.native`` does
  it from the shell (printing the status line; exit status 0 where they are available).
  Tracing never builds (:func:`supports` reads the status already determined).
* :func:`status`: whether the kernels are built and loaded here, and if not, why (one line;
  a cache folder or file that other users could have written is refused and named there:
  the rules are in :mod:`.build`).
"""

from vaefp_jax.native.build import NativeStatus as NativeStatus
from vaefp_jax.native.build import ensure_built as ensure_built
from vaefp_jax.native.build import status as status
from vaefp_jax.native.shifted import evaluate_shifted as evaluate_shifted
from vaefp_jax.native.shifted import shifted_sums as shifted_sums
from vaefp_jax.native.shifted import supports as supports

__all__ = ["status", "ensure_built", "NativeStatus", "evaluate_shifted", "shifted_sums", "supports"]
