"""Benchmark: the step maps at the issue's large size, n = 10⁴ points, K = 128² tiles (issue 16's
"no slower than today").

    python benchmarks/large_maps.py [--n 10000] [--k 128] [--num-betas 8] [--steps 3] [--repeats 2]

``solve``'s jitted program (``floor.exact_steps``, as in ``floor.py``) with every
β run for exactly ``--steps`` damped steps (float32, three-cluster data, β log-spaced in
[1e-4, 1]), with each step map in turn: ``DenseMap()`` (the C++ kernel's one pass where it
is built), ``DenseMap(kernel="xla")`` (the same pass as XLA's products),
``DenseMap(form="log_space")`` (the two-exponential map, as the dense map was before issue
16) and ``BlockedMap()``. Rows alternate within each repeat; prints ms per map evaluation
(the first step of every β is a maxima evaluation: the state starts at +inf). Compilation
excluded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import vaefp_jax as vf

sys.path.insert(0, os.path.dirname(__file__))
from floor import exact_steps  # noqa: E402
from sweep import cpu_description  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--k", type=int, default=128)
    ap.add_argument("--num-betas", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d')}  {cpu_description()}; jax {jax.__version__}; {vf.native.status()}")
    x = jnp.asarray(vf.datasets.three_clusters(args.n), jnp.float32)
    grid = vf.LatentGrid.uniform(args.k)
    psi0 = vf.initial_psi(x, grid)
    betas = np.geomspace(1e-4, 1.0, args.num_betas).astype(np.float32)
    evaluations = args.num_betas * args.steps
    print(f"# n={args.n}, K={grid.num_tiles}, {args.num_betas} beta x exactly {args.steps} steps, float32")
    maps = {"DenseMap()": vf.DenseMap(), "DenseMap(kernel='xla')": vf.DenseMap(kernel="xla"),
            "DenseMap(form='log_space')": vf.DenseMap(form="log_space"), "BlockedMap()": vf.BlockedMap()}
    programs = {}
    for name, step_map in maps.items():
        program = exact_steps(x, betas, grid, args.steps, step_map=step_map)
        programs[name] = lambda program=program: program(psi0)
        jax.block_until_ready(programs[name]())       # compile
    print("| repeat | " + " | ".join(maps) + " |")
    print("|---" * (len(maps) + 1) + "|")
    for rep in range(args.repeats):
        row = []
        for _name, program in programs.items():
            t = time.perf_counter()
            jax.block_until_ready(program())
            row.append(f"{(time.perf_counter() - t) / evaluations * 1e3:.0f}")
        print(f"| {rep + 1} | " + " | ".join(row) + " |  (ms per evaluation)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
