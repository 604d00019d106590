"""The ``vaefp`` command line.

    vaefp sweep                 β sweep on a built-in dataset or your points
    vaefp figure {1,3,4}        the paper's figures
    vaefp train-vae             the RealNVP-encoder VAE of Figure 1
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from vaefp_jax.cli_types import positive_float, positive_int

__all__ = ["main"]


def _dense_map():
    from vaefp_jax import DenseMap

    return DenseMap()


def _blocked_map():
    from vaefp_jax import BlockedMap

    return BlockedMap()  # the blocks solve's default blocked map uses


def _pallas_map():
    from vaefp_jax import PallasMap

    return PallasMap()


# ``vaefp sweep --map``: the step map, built on use (imports stay lazy for --help);
STEP_MAPS = {"auto": lambda: None, "dense": _dense_map, "blocked": _blocked_map, "pallas": _pallas_map}


def add_data_arguments(p: argparse.ArgumentParser, default: str = "three-clusters") -> None:
    from vaefp_jax.datasets import DATASETS

    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default, choices=sorted(DATASETS),
                   help=f"built-in dataset (default {default})")
    g.add_argument("--data", metavar="PATH", help="your own points: .npy, .npz or .csv of shape (n, d)")
    g.add_argument("--n", type=positive_int, help="number of points of the built-in dataset")
    g.add_argument("--seed", type=int, default=0, help="seed of the dataset and of the initial noise")


def add_grid_arguments(p: argparse.ArgumentParser, k: int = 32) -> None:
    g = p.add_argument_group("latent grid")
    g.add_argument("--k", type=positive_int, default=k, help=f"k×k tiles (default {k})")
    g.add_argument("--prior", choices=["uniform", "gaussian"], default="uniform",
                   help="uniform on [low, high]² (Appendix A) or N(0, I) tiles")
    g.add_argument("--low", type=float, default=-0.5)
    g.add_argument("--high", type=float, default=0.5)
    g.add_argument("--limit", type=positive_float, default=3.0, help="Gaussian grid: interior edges on ±limit")


def add_solver_arguments(p: argparse.ArgumentParser, protocol: str = "paper") -> None:
    g = p.add_argument_group("solver")
    g.add_argument("--protocol", choices=["paper", "tight"], default=protocol,
                   help="paper: Appendix A (α = 0.9 smoothing, tol 1e-3, 400 steps); tight: undamped, tol ~ precision")
    g.add_argument("--damping", type=float, help="override: weight of the previous iterate, in [0, 1)")
    g.add_argument("--tol", type=positive_float, help="override: tolerance on ‖ψ^{t+1} − ψ^t‖_F")
    g.add_argument("--max-steps", type=positive_int, help="override: iteration cap")
    g.add_argument("--float64", action="store_true", help="compute in float64 (JAX x64)")


def load_data(args) -> np.ndarray:
    from vaefp_jax import datasets, io

    if args.data:
        return io.load_points(args.data)
    return datasets.load_builtin(args.dataset, n=args.n, seed=args.seed)


def make_grid(args):
    from vaefp_jax.grid import LatentGrid

    if args.prior == "uniform":
        return LatentGrid.uniform(args.k, low=args.low, high=args.high)
    return LatentGrid.gaussian(args.k, limit=args.limit)


def make_iteration(args):
    """The damped iteration of ``--protocol`` with the ``--damping``, ``--tol`` and
    ``--max-steps`` overrides."""
    import dataclasses

    from vaefp_jax import Damped

    base = Damped.paper() if args.protocol == "paper" else Damped.tight()
    overrides = {k: v for k, v in (("damping", args.damping), ("tol", args.tol), ("max_steps", args.max_steps))
                 if v is not None}
    return dataclasses.replace(base, **overrides)


def _sweep(args) -> int:
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    import vaefp_jax as vf
    from vaefp_jax.clusters import count_distinct, default_merge_tol
    from vaefp_jax.engine.solve import prepare

    if args.beta_max <= args.beta_min:
        raise ValueError(f"--beta-max ({args.beta_max}) must exceed --beta-min ({args.beta_min})")
    x = load_data(args)
    grid = make_grid(args)
    iteration = make_iteration(args)
    dtype = jnp.float64 if args.float64 else jnp.float32
    betas = np.geomspace(args.beta_min, args.beta_max, args.num_betas)
    xj = jnp.asarray(x, dtype)
    psi0 = vf.initial_psi(xj, grid, iteration.init_noise, jax.random.PRNGKey(args.seed))
    (n, d), K = x.shape, grid.num_tiles
    # the map and slot count the engine resolves (needed here for the chunks and u)
    setup = prepare(xj, betas, grid, iteration=iteration, step_map=STEP_MAPS[args.map](),
                    schedule=vf.Pool(width=args.batch_size))
    step_map = setup["step_map"]
    width = setup["schedule"].resolved(setup["num"], setup["lane_shape"], setup["itemsize"]).width
    chunk = min(len(betas), 4 * width)  # β per call (progress granularity); the pool refills within a call
    u_fn = jax.jit(jax.vmap(step_map.order_parameter, in_axes=(0, None, 0, None)))
    parts, tol = [], None
    print(f"data: {n} points in {d}-D; grid: {K} tiles ({grid.kind}); "
          f"{len(betas)} β in [{args.beta_min:g}, {args.beta_max:g}]; protocol {args.protocol}; "
          f"{np.dtype(dtype).name}", file=sys.stderr)
    with tqdm(total=len(betas), desc="β sweep", unit="β", disable=args.quiet) as bar:
        for lo in range(0, len(betas), chunk):
            b = betas[lo:lo + chunk]
            pad = np.concatenate([b, np.repeat(b[-1:], chunk - len(b))])  # one compiled shape
            r = vf.solve(xj, pad, grid, iteration=iteration, step_map=step_map, schedule=vf.Pool(width=width),
                         psi0=psi0, throw=False)
            tol = r.tol
            u = u_fn(r.psi, xj, jnp.asarray(pad, dtype), jnp.asarray(grid.log_prior, dtype))
            parts.append({k: np.asarray(v)[: len(b)] for k, v in
                          dict(psi=r.psi, steps=r.steps, converged=r.converged, residual=r.residual, u=u,
                               status=r.status).items()})
            bar.update(len(b))
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    merge_tol = default_merge_tol(x)
    res["distinct"] = count_distinct(res["psi"], merge_tol)
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "sweep.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["beta", "u", "steps", "converged", "residual", "distinct_fixed_points"])
        for j, beta in enumerate(betas):
            w.writerow([f"{beta:.8g}", f"{res['u'][j]:.8g}", int(res["steps"][j]), bool(res["converged"][j]),
                        f"{res['residual'][j]:.3g}", int(res["distinct"][j])])
    npz_path = os.path.join(args.out, "sweep.npz")
    np.savez_compressed(npz_path, beta=betas, x=x, z=grid.z, log_prior=grid.log_prior, merge_tol=merge_tol, **res)
    _print_table(betas, res, tol)
    bad = int((~res["converged"]).sum())
    if bad:
        reasons = "; ".join(f"{int(np.sum(res['status'] == s))}: {s.message}" for s in vf.Status
                            if s is not vf.Status.CONVERGED and np.any(res["status"] == s))
        print(f"WARNING: {bad} of {len(betas)} β did not converge ({reasons}; at most {iteration.max_steps} "
              f"steps; marked 'no' above)", file=sys.stderr)
    print(f"wrote {csv_path} and {npz_path}")
    return 0


def _print_table(betas, res, tol) -> None:
    print(f"{'beta':>11} {'u':>12} {'steps':>6} {'conv':>5} {'residual':>9} {'fixed pts':>9}")
    for j, beta in enumerate(betas):
        print(f"{beta:11.4e} {res['u'][j]:12.5e} {int(res['steps'][j]):6d} "
              f"{'yes' if res['converged'][j] else 'no':>5} {res['residual'][j]:9.2e} {int(res['distinct'][j]):9d}")


def _figure(args) -> int:
    if args.number == "3":
        from vaefp_jax.figures.figure3 import figure3_command

        return figure3_command(args) or 0
    if args.number == "4":
        from vaefp_jax.figures.figure4 import figure4_command

        return figure4_command(args) or 0
    from vaefp_jax.vae.cli import figure1_command

    return figure1_command(args) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaefp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="solve the fixed-point equations over a range of β")
    add_data_arguments(s)
    add_grid_arguments(s)
    add_solver_arguments(s)
    s.add_argument("--beta-min", type=positive_float, default=1e-4)
    s.add_argument("--beta-max", type=positive_float, default=1.0)
    s.add_argument("--num-betas", type=positive_int, default=64)
    s.add_argument("--batch-size", type=positive_int,
                   help="β iterated together (slots of the pool schedule); default on CPU as many (≤ 8) as keep "
                        "their (n, K) arrays in a 2 MB cache budget (1 at 32 × 32 tiles, n = 120); "
                        "on GPU all (memory permitting)")
    s.add_argument("--map", choices=sorted(STEP_MAPS), default="auto",
                   help="how F(ψ) is computed: auto (dense, or on CPU blocked for n ≥ 2048 and n K ≥ 2^23), "
                        "dense (DenseMap), blocked (BlockedMap: 1024 × 1024 blocks of the n × K logits), "
                        "pallas (PallasMap: fused Pallas kernels; GPU, d ≤ 8)")
    s.add_argument("--out", default="runs/sweep", help="output folder (default runs/sweep)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_sweep)

    f = sub.add_parser("figure", help="reproduce a figure of the paper")
    f.add_argument("number", choices=["1", "3", "4"])
    f.add_argument("--out", default="runs/figures", help="output folder")
    f.add_argument("--small", action="store_true", help="a quick, coarse version")
    f.add_argument("--checkpoint", help="figure 1: a trained VAE checkpoint to load instead of training")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_figure)

    try:
        from vaefp_jax.vae.cli import register as register_vae
    except ImportError:
        register_vae = None
    if register_vae is not None:
        register_vae(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"vaefp: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
