"""``python -m vaefp_jax.native``: build the C++ kernels now (or find them in the cache) and
load them, print the status line (where the library is, or why the kernels are unavailable,
e.g. a refused cache folder), and exit with 0 where they are available, 1 otherwise."""

import sys

from vaefp_jax.native.build import ensure_built


def main() -> int:
    st = ensure_built()
    print(st)
    return 0 if st.available else 1


if __name__ == "__main__":
    sys.exit(main())
