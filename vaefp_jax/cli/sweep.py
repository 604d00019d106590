"""``vaefp sweep``: fixed points, u(β) and the number of distinct fixed points over a range of β."""

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

__all__ = ["register"]


def register(sub) -> None:
    s = sub.add_parser("sweep", help="solve the fixed-point equations over a range of β", description=__doc__)
    add_data_arguments(s)
    add_grid_arguments(s)
    add_solver_arguments(s)
    g = s.add_argument_group("β range and computation")
    g.add_argument("--beta-min", type=positive_float, default=1e-4, help="smallest β")
    g.add_argument("--beta-max", type=positive_float, default=1.0, help="largest β")
    example(g.add_argument("--num-betas", type=positive_int, default=64, help="log-spaced β in [beta-min, beta-max]"),
            "4")
    g.add_argument("--float64", action="store_true", help="compute in float64 (JAX x64)")
    example(g.add_argument("--batch-size", type=positive_int,
                   help="β iterated together (slots of the pool schedule); default on CPU as many (≤ 8) as keep "
                        "their (n, K) arrays in a 2 MB cache budget (1 at 32 × 32 tiles, n = 120); "
                        "on GPU all (memory permitting)"), "2")
    add_map_argument(g)
    add_output_arguments(s, "runs/sweep", figures=False)
    s.set_defaults(func=sweep_command)


def sweep_command(args) -> int:
    from vaefp_jax.runs import prepare_out

    if args.beta_max <= args.beta_min:
        raise ValueError(f"--beta-max ({args.beta_max}) must exceed --beta-min ({args.beta_min})")
    iteration = make_iteration(args)
    grid = make_grid(args)
    x, _, data_record = load_data(args)
    prepare_out(args.out)   # before any compute: a bad path must not cost the run

    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from vaefp_jax.clusters import count_distinct, default_merge_tol
    from vaefp_jax.engine.initial import initial_psi
    from vaefp_jax.engine.schedules import Pool
    from vaefp_jax.engine.solution import Status
    from vaefp_jax.engine.solve import prepare, solve
    from vaefp_jax.runs import SweepRun, make_record

    dtype = jnp.float64 if args.float64 else jnp.float32
    betas = np.geomspace(args.beta_min, args.beta_max, args.num_betas)
    xj = jnp.asarray(x, dtype)
    psi0 = initial_psi(xj, grid, iteration.init_noise, jax.random.PRNGKey(args.seed))
    (n, d), K = x.shape, grid.num_tiles
    # the map and slot count the engine resolves (needed here for the chunks and u)
    setup = prepare(xj, betas, grid, iteration=iteration, step_map=make_step_map(args),
                    schedule=Pool(width=args.batch_size))
    step_map = setup.step_map
    width = setup.schedule.resolved(setup.num, setup.lane_shape, setup.itemsize).width
    chunk = min(len(betas), 4 * width)  # β per call (progress granularity); the pool refills within a call
    u_fn = jax.jit(jax.vmap(step_map.order_parameter, in_axes=(0, None, 0, None)))
    parts: list[dict] = []
    tol: float | None = None
    say(args, f"data: {n} points in {d}-D; grid: {K} tiles ({grid.kind}); {len(betas)} β in "
              f"[{args.beta_min:g}, {args.beta_max:g}]; protocol {args.protocol}; {np.dtype(dtype).name}")
    bars = StageBars(args.quiet)
    try:
        for lo in range(0, len(betas), chunk):
            b = betas[lo:lo + chunk]
            pad = np.concatenate([b, np.repeat(b[-1:], chunk - len(b))])  # one compiled shape
            r = solve(xj, pad, grid, iteration=iteration, step_map=step_map, schedule=Pool(width=width),
                      psi0=psi0, throw=False)
            tol = r.tol
            u = u_fn(r.psi, xj, jnp.asarray(pad, dtype), jnp.asarray(grid.log_prior, dtype))
            parts.append({k: np.asarray(v)[: len(b)] for k, v in
                          dict(psi=r.psi, steps=r.steps, residual=r.residual, u=u, status=r.status).items()})
            bars("sweep", lo + len(b), len(betas))
    finally:
        bars.close()
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    merge_tol = default_merge_tol(x)
    record = make_record("sweep", data=data_record, grid=grid, iteration=iteration, step_map=step_map, dtype=dtype,
                         seed=args.seed, betas=betas, tol=float(tol) if tol is not None else None, merge_tol=merge_tol)
    run = SweepRun(beta=betas, distinct=np.asarray(count_distinct(res["psi"], merge_tol)), merge_tol=merge_tol,
                   record=record, x=np.asarray(x, np.float64), log_prior=np.asarray(grid.log_prior), **res)
    paths = run.save(args.out)
    _print_table(run)
    bad = int((~run.converged).sum())
    if bad:
        reasons = "; ".join(f"{int(np.sum(run.status == s))}: {s.message}" for s in Status
                            if s is not Status.CONVERGED and np.any(run.status == s))
        print(f"WARNING: {bad} of {len(betas)} β did not converge ({reasons}; at most {iteration.max_steps} "
              f"steps; marked 'no' above)", file=sys.stderr)
    print("wrote " + ", ".join(paths))
    return not_converged_exit(args, bad)


def _print_table(run) -> None:
    print(f"{'beta':>11} {'u':>12} {'steps':>6} {'conv':>5} {'residual':>9} {'fixed pts':>9}")
    for j, beta in enumerate(run.beta):
        print(f"{beta:11.4e} {run.u[j]:12.5e} {int(run.steps[j]):6d} "
              f"{'yes' if run.converged[j] else 'no':>5} {run.residual[j]:9.2e} {int(run.distinct[j]):9d}")
