"""``python -m vaefp_jax``: the ``vaefp`` command line."""

from vaefp_jax.cli import console_main

console_main()
