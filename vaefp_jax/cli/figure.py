"""``vaefp figure {1,3,4}``: the paper's figures."""

from __future__ import annotations

from vaefp_jax.cli.common import add_output_arguments
from vaefp_jax.cli_types import example

__all__ = ["register"]


def _figure(args) -> int:
    from vaefp_jax.runs import prepare_out

    if args.checkpoint and args.number != "1":
        raise ValueError(f"--checkpoint applies to figure 1 (the VAE), not to figure {args.number}")
    prepare_out(args.out)   # before any compute: a bad path must not cost the run
    if args.number == "3":
        from vaefp_jax.figures.figure3 import figure3_command

        return figure3_command(args) or 0
    if args.number == "4":
        from vaefp_jax.figures.figure4 import figure4_command

        return figure4_command(args) or 0
    from vaefp_jax.vae.cli import figure1_command

    return figure1_command(args) or 0


def register(sub) -> None:
    f = sub.add_parser("figure", help="reproduce a figure of the paper", description=__doc__)
    example(f.add_argument("number", choices=["1", "3", "4"], help="which figure"),
            "4", "3", "1 --checkpoint {checkpoint}", invalid="2")
    f.add_argument("--small", action="store_true", help="a quick, coarse version")
    example(f.add_argument("--checkpoint", help="figure 1: a trained VAE checkpoint to load instead of training"),
            "{checkpoint}", invalid="{tmp}/no-such-run", needs="1")
    f.add_argument("--seed", type=int, default=0, help="seed of the data and the noise")
    add_output_arguments(f, "runs/figures")
    f.set_defaults(func=_figure)
