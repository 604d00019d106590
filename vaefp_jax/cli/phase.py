"""``vaefp phase``: the critical temperatures, split tree and cluster labels of a data set.

With ``--model reduced`` (the default) the phase diagram comes from Proposition 5's reduced
fixed point: one cluster above λ_max of the covariance, split one at a time on cooling, every
β_c the exact root of λ_max(C_a(β)) = β on its branch (no β grid), down to --max-clusters.
Writes into --out: run.json (what produced the run; the splits, levels, merges and score),
tree.npz, splits.csv, levels.csv, labels.csv (every point's cluster at every level),
linkage.csv (SciPy), sweep.csv (the cross-check: u, u′, u″ inside every level), phase.<format>
and tree.<format>.

With ``--model grid`` it is the tile analysis (fixed tile masses: which tiles go to which
side of a split depends on the iteration's path). The β range comes from the data unless
given: from a little below the scale at which nearest neighbours merge up to twice λ_max of
the covariance (where the last merge is). β are visited on cooling (from the single cluster
down), with the accelerated iteration, in float64. Writes into --out: run.json (what
produced the run: data file and SHA-256, grid, iteration, dtype, seed, versions; the
critical table and merges), phase.npz (all arrays), betas.csv, critical.csv, merges.csv,
labels.csv (every point's cluster at every level), linkage.csv (SciPy linkage matrix),
phase.<format> and tree.<format>.
Load it back with ``vaefp_jax.load(folder)``.
"""

from __future__ import annotations

import sys

import numpy as np

from vaefp_jax.cli.common import (
    StageBars,
    add_data_arguments,
    add_grid_arguments,
    add_map_argument,
    add_output_arguments,
    add_solver_arguments,
    load_data,
    make_grid,
    make_iteration,
    make_step_map,
    not_converged_exit,
    say,
)
from vaefp_jax.cli_types import example, positive_float, positive_int

__all__ = ["phase_command", "register"]


# options of the tile analysis only: refused with --model reduced (their defaults are filled in
# for --model grid, so that a value given to the wrong model is never silently ignored)
GRID_ONLY = ("beta_max", "num_betas", "continuation", "top_k", "refine_merges", "k", "prior", "low", "high", "limit",
             "protocol", "damping", "map")
REDUCED_ONLY = ("max_clusters", "min_mass", "cross_check", "read")


def register(sub) -> None:
    p = sub.add_parser("phase", help="critical temperatures, split tree and cluster labels of a data set",
                       description=__doc__)
    add_data_arguments(p, labels=True)
    g = p.add_argument_group("analysis")
    g.add_argument("--model", choices=["reduced", "grid"], default="reduced",
                   help="reduced: Prop. 5's distinct fixed points with free masses, exact β_c (default); grid: "
                        "the tile analysis of a β sweep")
    g.add_argument("--standardize", action="store_true",
                   help="scale every column to mean 0 and variance 1 first (a constant column becomes 0)")
    example(g.add_argument("--max-clusters", type=positive_int,
                           help="reduced: stop at this many clusters (default 16; with known classes, on until a "
                                "level has as many significant clusters as classes: at least 2×, at most 8× the "
                                "classes)"), "3", invalid="0")
    example(g.add_argument("--min-mass", type=float,
                           help="reduced: fraction of the points a significant cluster holds (default 0.01); the "
                                "score reads the level with as many significant clusters as classes"),
            "0.05", invalid="1.5")
    example(g.add_argument("--cross-check", type=int,
                           help="reduced: β per level of the u, u′, u″ sweep drawn against the exact β_c "
                                "(default 12; 0: none), on the levels with m (d + 1) ≤ 2048 (dense Jacobian)"),
            "0", "3", invalid="-1")
    g.add_argument("--read", choices=["low", "high"],
                   help="reduced: read each level at the low-β end of its interval (default) or just below its split")
    example(g.add_argument("--beta-min", type=positive_float,
                           help="smallest β (reduced: stop there; grid: default from nearest-neighbour distances)"),
            "1e-3", invalid="0")
    example(g.add_argument("--beta-max", type=positive_float, help="largest β (default: 2 λ_max of the covariance)"),
            "10", invalid="-1")
    example(g.add_argument("--num-betas", type=positive_int, default=48, help="log-spaced β"), "4", invalid="2")
    g.add_argument("--continuation", choices=["cooling", "heating", "none"], default="cooling",
                   help="visit β from large to small, each from the previous fixed point (cooling), the reverse, "
                        "or each from the grid initialisation (none, the paper's independent solves)")
    example(g.add_argument("--top-k", type=positive_int, default=8, help="curvature peaks reported and refined"), "2")
    example(g.add_argument("--refine-merges", type=int, default=6, help="highest brackets of the merge tree refined"),
            "0", invalid="-1")
    g.add_argument("--float32", action="store_true", help="compute in float32 (u″ is noisier)")
    add_map_argument(g)
    add_grid_arguments(p, k=12)
    add_solver_arguments(p, protocol="accelerated", choices=("accelerated", "paper", "tight"))
    add_output_arguments(p, "runs/phase")
    grid_defaults = {}   # dest → (default, option string): the parser's own, carried by the parsed args
    for action in p._actions:
        if action.dest in GRID_ONLY:
            default = action.default
            grid_defaults[action.dest] = (default, action.option_strings[-1])
            action.default = None
            if not getattr(action, "valid_examples", None) and not action.choices and default is not None:
                action.valid_examples = [str(default)]   # the value the test of every option tries
            action.needs = ("--model grid " + getattr(action, "needs", "")).strip()
            action.help = f"grid: {action.help}" + (f" (default: {default})" if default is not None else "")
    p.set_defaults(func=phase_command, grid_defaults=grid_defaults)


def _check_model(args) -> None:
    """Refuse the options of the other model; fill in the grid options' defaults."""
    if args.model == "reduced":
        given = [opt for dest, (_, opt) in args.grid_defaults.items() if getattr(args, dest) is not None]
    else:
        given = [f"--{dest.replace('_', '-')}" for dest in REDUCED_ONLY if getattr(args, dest) is not None]
    if given:
        other = "grid" if args.model == "reduced" else "reduced"
        raise ValueError(f"{given[0]} applies to --model {other}, not to --model {args.model}")
    if args.model == "grid":
        for dest, (default, _) in args.grid_defaults.items():
            if getattr(args, dest) is None:
                setattr(args, dest, default)


def phase_command(args) -> int:
    _check_model(args)
    if args.model == "reduced":
        return _reduced(args)
    from vaefp_jax.runs import prepare_out

    if args.beta_min is not None and args.beta_max is not None and args.beta_max <= args.beta_min:
        raise ValueError(f"--beta-max ({args.beta_max}) must exceed --beta-min ({args.beta_min})")
    if args.num_betas < 3:
        raise ValueError(f"--num-betas must be ≥ 3 for a phase analysis, got {args.num_betas}")
    if args.refine_merges < 0:
        raise ValueError(f"--refine-merges must be ≥ 0, got {args.refine_merges}")
    iteration = make_iteration(args)
    step_map = make_step_map(args)
    grid = make_grid(args)
    x, labels, data_record = load_data(args)
    if x.shape[0] < 2:
        raise ValueError(f"a phase analysis needs at least 2 points, got {x.shape[0]}")
    prepare_out(args.out)   # before any compute: a bad path must not cost the run

    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    from vaefp_jax.phase.analysis import phase_analysis

    n, d = x.shape
    dtype = np.float32 if args.float32 else np.float64
    say(args, f"data: {n} points in {d}-D{' (standardised)' if args.standardize else ''}"
              f"{'; ' + str(len(np.unique(labels))) + ' classes' if labels is not None else ''}; "
              f"grid: {grid.num_tiles} tiles; {args.num_betas} β on {args.continuation}; "
              f"iteration {args.protocol}; map {args.map}; {np.dtype(dtype).name}")
    bars = StageBars(args.quiet)
    try:
        result = phase_analysis(np.asarray(x, dtype), grid=grid, num_betas=args.num_betas,
                                beta_range=(args.beta_min, args.beta_max),
                                standardize_data=args.standardize, true_labels=labels, iteration=iteration,
                                step_map=step_map,
                                continuation=None if args.continuation == "none" else args.continuation,
                                top_k=args.top_k, refine_merges=args.refine_merges, seed=args.seed,
                                data_record=data_record, throw=False, progress=bars)
    finally:
        bars.close()
    paths = result.save(args.out, format=args.format)
    _report(result)
    bad = int((~result.converged).sum())
    if bad:
        print(f"WARNING: {bad} of {result.beta.size} β did not converge (β = "
              + ", ".join(f"{b:.4g}" for b in result.beta[~result.converged]) + "); they are left out of the "
              "tree and the peak search", file=sys.stderr)
    print("wrote " + ", ".join(paths))
    return not_converged_exit(args, bad)


def _report(result) -> None:
    print(f"{'β_c (sweep)':>12} {'refined':>10} {'|u″|':>10} {'jump':>5} {'fixed pts below/above':>22}")
    for c in result.critical:
        print(f"{c.beta:12.4g} {c.refined:10.4g} {c.abs_d2u:10.3g} {c.jump!s:>5} "
              f"{c.fixed_points_below:>11d}/{c.fixed_points_above:<10d}")
    tree = result.tree
    print(f"merge tree: {int(tree.counts[0])} clusters at β = {tree.beta[0]:.4g} → {int(tree.counts[-1])} at "
          f"β = {tree.beta[-1]:.4g}; last merges at β = "
          + ", ".join(f"{m.height:.4g} ({len(m.children)}→1)" for m in tree.merges[-4:]))
    if not tree.complete:
        print("note: the data did not merge into one cluster within the sweep: raise --beta-max")
    score = result.score()
    if score is not None:
        print(f"at {score['clusters']} clusters (β = {score['beta']:.4g}; {score['classes']} classes): "
              f"adjusted Rand index {score['ari']:.3f}")


def _reduced(args) -> int:
    from vaefp_jax.runs import prepare_out

    if args.min_mass is not None and not 0 <= args.min_mass < 1:
        raise ValueError(f"--min-mass must lie in [0, 1), got {args.min_mass}")
    if args.cross_check is not None and args.cross_check < 0:
        raise ValueError(f"--cross-check must be ≥ 0, got {args.cross_check}")
    x, labels, data_record = load_data(args)
    if x.shape[0] < 2:
        raise ValueError(f"a phase analysis needs at least 2 points, got {x.shape[0]}")
    prepare_out(args.out)

    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    from vaefp_jax.phase.split_analysis import default_max_clusters, split_analysis

    n, d = x.shape
    dtype = np.float32 if args.float32 else np.float64
    classes = None if labels is None else len(np.unique(labels))
    max_clusters = args.max_clusters or default_max_clusters(classes)   # a cap: see split_analysis
    say(args, f"data: {n} points in {d}-D{' (standardised)' if args.standardize else ''}"
              f"{'; ' + str(classes) + ' classes' if classes else ''}; reduced model down to "
              f"{'' if args.max_clusters else 'at most '}{max_clusters} clusters"
              f"{'' if args.beta_min is None else f' or β = {args.beta_min:g}'}; {np.dtype(dtype).name}")
    bars = StageBars(args.quiet)
    try:
        result = split_analysis(np.asarray(x, dtype), max_clusters=args.max_clusters, beta_min=args.beta_min,
                                standardize_data=args.standardize, true_labels=labels,
                                min_mass=0.01 if args.min_mass is None else args.min_mass,
                                read=args.read or "low",
                                cross_check=12 if args.cross_check is None else args.cross_check,
                                data_record=data_record, progress=bars, tol=args.tol,
                                max_steps=args.max_steps or 100_000)
    finally:
        bars.close()
    paths = result.save(args.out, format=args.format)
    _report_tree(result)
    print("wrote " + ", ".join(paths))
    sweep_bad = int(np.sum(~np.isfinite(result.sweep_u)))
    if sweep_bad:
        print(f"WARNING: {sweep_bad} β of the cross-check sweep did not converge (left blank in sweep.csv)",
              file=sys.stderr)
    branch_bad = result.record.get("unconverged") or []   # warned about (one line) by split_analysis
    return not_converged_exit(args, sweep_bad + len(branch_bad))


def _report_tree(result) -> None:
    exact = sum(s.exact for s in result.splits)
    why = {"max_clusters": "--max-clusters reached", "beta_min": "--beta-min reached",
           "stop": "a level has as many significant clusters as classes"}.get(result.record["stopped"],
                                                                               result.record["stopped"])
    print(f"{len(result.splits)} splits ({exact} exact roots of λ_max(C_a) = β; "
          f"{len(result.splits) - exact} on arrival); stopped: {why}")
    print(f"{'clusters':>8} {'β_c':>14} {'condition':>10} {'masses':>14}")
    for s in result.splits[:12]:
        print(f"{s.clusters:>8d} {s.beta_c:14.8g} {s.condition:10.1e} {s.mass_a:6.3f} {s.mass_b:6.3f}")
    if len(result.splits) > 12:
        print(f"{'…':>8} ({len(result.splits) - 12} more in splits.csv)")
    p = result.levels[result.persistent_level]
    print(f"most persistent level: {p.clusters} clusters, β in [{p.beta_low:.4g}, {p.beta_high:.4g}] "
          f"(width {p.width:.3f} in ln β)")
    score = result.score()
    if score is not None:
        print(f"at {score['clusters']} clusters ({score['significant']} significant; {score['classes']} classes; "
              f"read at β = {score['beta_read']:.4g}): adjusted Rand index {score['ari']:.3f}")
