"""C++ kernels for the CPU (XLA FFI custom calls), compiled on first use (:mod:`.build`).

* :func:`evaluate_shifted`: eq. (14)–(15) with the previous evaluation's normalisers as
  shifts, each exponential computed and read once (:mod:`.shifted`); what
  :class:`vaefp_jax.maps.DenseMap` runs inside an iteration on CPU.
* :func:`status`: whether the kernels are built and loaded here, and if not, why.
"""

from vaefp_jax.native.build import NativeStatus as NativeStatus
from vaefp_jax.native.build import status as status
from vaefp_jax.native.shifted import evaluate_shifted as evaluate_shifted
from vaefp_jax.native.shifted import shifted_sums as shifted_sums
from vaefp_jax.native.shifted import supports as supports

__all__ = ["status", "NativeStatus", "evaluate_shifted", "shifted_sums", "supports"]
