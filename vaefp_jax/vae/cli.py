"""Command line for the Figure 1 VAE: ``vaefp train-vae`` and ``vaefp figure 1``.

Heavy imports (JAX, Flax, orbax, matplotlib) happen inside the commands so that
registering the subcommand costs nothing.

    vaefp train-vae --out runs/vae                 # default config, ~4–6 min on 2 CPU cores
    vaefp train-vae --out runs/vae --resume        # continue from the latest checkpoint
    vaefp figure 1 --checkpoint runs/vae --out runs/figures

A run directory holds config.json, exemplars.npz, history.json, checkpoints/,
metrics.json (tiling metrics) and figure1.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from vaefp_jax.cli_types import example, positive_float, positive_int

__all__ = ["add_train_arguments", "config_from_args", "figure1_command", "register", "train_vae_command"]

_DESCRIPTION = """Train the VAE of the paper's Figure 1 (conditional RealNVP encoder, 2-D latent,
N(0, I) prior, Gaussian likelihood with fixed σ) on 40 MNIST digits, then measure
the latent tiling (Prop. 2) and draw Figure 1.

    vaefp train-vae --out runs/vae                 # default config, ~4–6 min on 2 CPU cores
    vaefp train-vae --out runs/vae --resume        # continue from the latest checkpoint
    vaefp figure 1 --checkpoint runs/vae --out runs/figures

The run directory gets config.json, exemplars.npz, history.json, checkpoints/,
metrics.json (tiling metrics) and figure1.png."""

METRICS_FILE = "metrics.json"
FIGURE_FILE = "figure1.png"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults: VAEConfig)")
    example(g.add_argument("--config", metavar="JSON",
                           help="a JSON file of VAEConfig fields (the options below override it)"),
            "{vae_config}", invalid="{tmp}/no-such-config.json")
    g.add_argument("--small", action="store_true", help="start from SMALL_CONFIG (≈ 20 s) instead of the default")
    example(g.add_argument("--steps", type=positive_int, help="optimisation steps"), "3", invalid="0")
    example(g.add_argument("--seed", type=int, help="seed of parameters and Monte Carlo noise"), "1", invalid="-1")
    example(g.add_argument("--sigma", type=positive_float, help="fixed likelihood σ (pixels in [0, 1])"), "0.5")
    example(g.add_argument("--beta", type=positive_float, help="β of the β-ELBO"), "1.5")
    example(g.add_argument("--samples", type=positive_int, help="z samples per image per step"), "2")
    example(g.add_argument("--stop-at", type=int, help="stop after this many steps, as if interrupted (resume later)"),
            "1", invalid="-1")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    d = p.add_argument_group("data (default: the packaged 40 MNIST test images)")
    idx = "--idx-images {idx_images} --idx-labels {idx_labels}"
    example(d.add_argument("--idx-images", metavar="PATH", help="IDX images file (.gz or raw)"),
            "{idx_images}", invalid="{tmp}/no-such-images.gz", needs="--idx-labels {idx_labels}")
    example(d.add_argument("--idx-labels", metavar="PATH", help="IDX labels file (.gz or raw)"),
            "{idx_labels}", invalid="{file}", needs="--idx-images {idx_images}")
    example(d.add_argument("--per-digit", type=positive_int, default=4, help="images per digit from the IDX files"),
            "2", invalid="0", needs=idx)
    example(d.add_argument("--idx-seed", type=int,
                           help="draw the IDX images at random with this seed (default: the first ones)"),
            "3", invalid="-3", needs=idx)
    e = p.add_argument_group("evaluation")
    example(e.add_argument("--prior-samples", type=positive_int, default=100_000, help="M, for the tile masses"),
            "300", invalid="0")
    example(e.add_argument("--posterior-samples", type=positive_int, default=1000, help="S per exemplar"),
            "5", invalid="0")
    e.add_argument("--no-figure", action="store_true", help="skip Figure 1")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train-vae`` to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser("train-vae", help="train the RealNVP-encoder VAE of Figure 1 on 40 MNIST digits",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    example(p.add_argument("--out", default="runs/vae", help="run directory (default runs/vae)"),
            "{out}-vae", invalid="{file}/sub")
    add_train_arguments(p)
    p.set_defaults(func=train_vae_command)
    return p


def config_from_args(args):
    """VAEConfig from --config/--small and the individual overrides."""
    from vaefp_jax.vae.config import SMALL_CONFIG, VAEConfig

    config = SMALL_CONFIG if getattr(args, "small", False) else VAEConfig()
    if getattr(args, "config", None):
        path = pathlib.Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config: no such file {path}")
        try:
            fields = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"--config {path}: not a readable JSON file ({err})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"--config {path}: must hold a JSON object of VAEConfig fields")
        config = VAEConfig.from_dict({**config.to_dict(), **fields})
    overrides = {"steps": "steps", "seed": "seed", "sigma": "sigma", "beta": "beta", "samples": "num_samples"}
    changes = {field: getattr(args, opt) for opt, field in overrides.items() if getattr(args, opt, None) is not None}
    return config.replace(**changes)


def _exemplars_from_args(args):
    from vaefp_jax.mnist import load_idx

    if bool(args.idx_images) != bool(args.idx_labels):
        raise ValueError("--idx-images and --idx-labels go together")
    if not args.idx_images:
        if args.idx_seed is not None:
            raise ValueError("--idx-seed applies to --idx-images/--idx-labels, not to the packaged images")
        return None
    return load_idx(args.idx_images, args.idx_labels, per_digit=args.per_digit, seed=args.idx_seed)


def evaluate_and_draw(trained, out: pathlib.Path, *, prior_samples: int = 100_000, posterior_samples: int = 1000,
                      figure: bool = True, metrics_name: str = METRICS_FILE, resolution: int = 200,
                      figure_format: str = "png"):
    """Tiling metrics → out/metrics.json and Figure 1 → out/figure1.png. Returns the metrics."""
    from vaefp_jax.vae.figure1 import figure1_data, save_figure1
    from vaefp_jax.vae.tiling import evaluate_tiling

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    metrics = evaluate_tiling(trained, num_prior=prior_samples, num_posterior=posterior_samples)
    metrics.to_json(out / metrics_name)
    print(metrics.summary())
    print(f"metrics: {out / metrics_name} ({time.perf_counter() - t0:.1f} s)")
    if figure:
        path = out / pathlib.Path(FIGURE_FILE).with_suffix(f".{figure_format}")
        title = (f"{metrics.num_exemplars} MNIST exemplars, step {trained.step}: I(i;z) = "
                 f"{metrics.mutual_information:.3f} (ln n = {metrics.log_n:.3f}), tile-mass CV = {metrics.mass_cv:.3f}")
        save_figure1(figure1_data(trained, resolution=resolution), path, title=title)
        print(f"figure: {path}")
    return metrics


def train_vae_command(args) -> int:
    from vaefp_jax.runs import prepare_out
    from vaefp_jax.vae.train import train_vae

    config = config_from_args(args)
    exemplars = _exemplars_from_args(args)
    out = pathlib.Path(prepare_out(args.out))   # before any compute: a bad path must not cost the run
    from vaefp_jax.vae import checkpoint as ckpt

    done = ckpt.latest_step(out)
    if done is not None and not args.resume:
        raise ValueError(f"{out} already holds a training run (checkpoints up to step {done}): continue it with "
                         "--resume, or choose another --out")
    t0 = time.perf_counter()
    trained = train_vae(config, exemplars, out=out, resume=args.resume,
                        stop_at=args.stop_at, progress=not args.quiet)
    print(f"trained to step {trained.step} in {time.perf_counter() - t0:.1f} s; checkpoints in {out / 'checkpoints'}")
    if trained.step < config.steps:
        print(f"stopped at {trained.step}/{config.steps}; continue with --resume")
        return 0
    evaluate_and_draw(trained, out, prior_samples=args.prior_samples, posterior_samples=args.posterior_samples,
                      figure=not args.no_figure)
    return 0


def figure1_command(args) -> int:
    """``vaefp figure 1 [--checkpoint RUN] [--out DIR] [--small] [--seed S]``.

    With --checkpoint, loads that run (directory, its checkpoints/ folder or one
    step folder); otherwise trains the default config into OUT/vae-run
    (SMALL_CONFIG into OUT/vae-run-small with --small), resuming a run left
    there. Writes OUT/figure1.png and OUT/figure1_metrics.json.
    """
    from vaefp_jax.vae.config import SMALL_CONFIG, VAEConfig
    from vaefp_jax.vae.train import train_vae
    from vaefp_jax.vae.trained import TrainedVAE

    out = pathlib.Path(getattr(args, "out", None) or "runs/figures")
    small = bool(getattr(args, "small", False))
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint:
        trained = TrainedVAE.load(checkpoint)
    else:
        config = SMALL_CONFIG if small else VAEConfig()
        seed = getattr(args, "seed", None)
        if seed is not None:
            config = config.replace(seed=int(seed))
        run = out / ("vae-run-small" if small else "vae-run")
        trained = train_vae(config, out=run, resume=(run / "checkpoints").is_dir(),
                            progress=not getattr(args, "quiet", False))
    evaluate_and_draw(trained, out, prior_samples=20_000 if small else 100_000,
                      posterior_samples=200 if small else 1000, metrics_name="figure1_metrics.json",
                      resolution=120 if small else 200, figure_format=getattr(args, "format", "png"))
    return 0
