"""``python -m vaefp_jax``: the ``vaefp`` command line."""

import sys

from vaefp_jax.cli import main

sys.exit(main())
