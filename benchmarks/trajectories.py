"""Where two correct float32 forms of the map end apart after a fixed number of steps, and why.

    python benchmarks/trajectories.py [--num-betas 1024] [--steps 400] [--k 32] [--n 120]

``floor.py`` runs every β for exactly ``--steps`` damped steps (α = 0.9, no stopping rule)
and prints max |ψ(row) − ψ(first row)| over all β and tiles. Two forms of the same map
round differently, and where the iteration has not converged, or sits near a critical
temperature where the fixed point's Jacobian has an eigenvalue near 1 (critical slowing
down, a symmetry that float32 rounding breaks one way or the other), a difference of one
ulp per step is carried along or amplified instead of damped. This script tells such
trajectory divergence from an error of one form. It runs, on ``floor.py``'s problem
(three clusters, k × k tiles, β log-spaced in [1e-4, 1], ψ⁰ = ``initial_psi``):

* float32 with the C++ kernel (``DenseMap()``, where built), with XLA's shifted form
  (``DenseMap(kernel="xla")``) and with the two-exponential log-space form
  (``DenseMap(form="log_space")``, the reference map);
* float64 with XLA's shifted form, the same number of steps: the trajectory float32 tries
  to follow.

Per β it takes the distance between the float32 runs and from each to the float64 run
(max over tiles and coordinates), and the float64 run's last step ‖ψ_S − ψ_{S−1}‖∞ and
its contraction ratio ρ = ‖ψ_S − ψ_{S−1}‖ / ‖ψ_{S−1} − ψ_{S−2}‖ (ρ → 1 at a critical
temperature). Prints the β where the kernel and XLA's form differ by more than
``--threshold``, these diagnostics there, and a summary: if the kernel were in error, it
would be farther from float64 than XLA's form is, at β where the iteration contracts;
trajectory divergence shows as the log-space reference differing from XLA's form by as
much, at the same β, where ρ is near 1 or the last step is large.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)   # the float64 run; the float32 runs cast explicitly

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import vaefp_jax as vf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from floor import exact_steps  # noqa: E402
from sweep import cpu_description  # noqa: E402


def run(x, betas, grid, steps, step_map, dtype, keep_last=False):
    """ψ after exactly ``steps`` damped steps for every β: (B, K, d) in ``dtype``; with
    ``keep_last`` also the states after ``steps − 2`` and ``steps − 1`` (the run goes on from
    the first by one step twice; each restart takes its first step's shifts from the maxima,
    which moves ψ only by rounding)."""
    x, betas = jnp.asarray(x, dtype), jnp.asarray(betas, dtype)
    psi = jnp.asarray(vf.initial_psi(np.asarray(x, np.float64), grid), dtype)
    out = []
    for s in ((steps - 2, 1, 1) if keep_last else (steps,)):
        res = exact_steps(x, betas, grid, s, step_map=step_map)(psi)
        assert int(np.min(res["steps"])) == s == int(np.max(res["steps"]))
        psi = res["psi"]
        assert psi.dtype == dtype, psi.dtype
        out.append(np.asarray(psi))
    return out if keep_last else out[0]


def dist(a, b):
    """max over tiles and coordinates of |a − b|, per β: (B,)."""
    return np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), axis=(1, 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-betas", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--threshold", type=float, default=1e-3, help="kernel − XLA distance that counts as apart")
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d')}  {cpu_description()}; jax {jax.__version__}; {vf.native.status()}")
    x = vf.datasets.three_clusters(args.n)
    grid = vf.LatentGrid.uniform(args.k)
    betas = np.geomspace(1e-4, 1.0, args.num_betas).astype(np.float32)
    print(f"# n={args.n}, K={grid.num_tiles}, {args.num_betas} beta in [1e-4, 1], exactly {args.steps} damped steps")
    t = time.perf_counter()
    native = run(x, betas, grid, args.steps, vf.DenseMap(), np.float32)
    xla = run(x, betas, grid, args.steps, vf.DenseMap(kernel="xla"), np.float32)
    log_space = run(x, betas, grid, args.steps, vf.DenseMap(form="log_space"), np.float32)
    p2, p1, p0 = run(x, betas, grid, args.steps, vf.DenseMap(kernel="xla"), np.float64, keep_last=True)
    print(f"# runs took {time.perf_counter() - t:.0f} s")
    d_nx, d_lx = dist(native, xla), dist(log_space, xla)
    d_n64, d_x64, d_l64 = dist(native, p0), dist(xla, p0), dist(log_space, p0)
    last, before = dist(p0, p1), dist(p1, p2)
    rho = last / np.maximum(before, 1e-300)
    apart = np.flatnonzero(d_nx > args.threshold)
    print(f"# max over beta: |kernel - xla| {d_nx.max():.1e}, |log_space - xla| {d_lx.max():.1e}; "
          f"to float64: kernel {d_n64.max():.1e}, xla {d_x64.max():.1e}, log_space {d_l64.max():.1e}")
    print(f"# {apart.size} beta with |kernel - xla| > {args.threshold:g}")
    print("| beta | kernel−xla | log_space−xla | kernel−f64 | xla−f64 | log_space−f64 | f64 last step | f64 ρ |")
    print("|---|---|---|---|---|---|---|---|")
    for i in apart:
        print(f"| {betas[i]:.4g} | {d_nx[i]:.1e} | {d_lx[i]:.1e} | {d_n64[i]:.1e} | {d_x64[i]:.1e} | "
              f"{d_l64[i]:.1e} | {last[i]:.1e} | {rho[i]:.4f} |")
    rest = np.setdiff1d(np.arange(betas.size), apart)
    settled = rest[last[rest] < 1e-6]
    print(f"# elsewhere ({rest.size} beta): max |kernel - xla| {d_nx[rest].max():.1e}, "
          f"max |log_space - xla| {d_lx[rest].max():.1e}")
    if settled.size:
        print(f"# where float64's last step is < 1e-6 ({settled.size} beta): to float64 max kernel "
              f"{d_n64[settled].max():.1e}, xla {d_x64[settled].max():.1e}, log_space {d_l64[settled].max():.1e}")
    both = np.flatnonzero((d_nx > args.threshold) | (d_lx > args.threshold))
    print(f"# beta where either float32 pair is apart: {both.size}; of them the log_space-xla pair "
          f"is apart at {int(np.sum(d_lx[both] > args.threshold))}, the kernel-xla pair at "
          f"{int(np.sum(d_nx[both] > args.threshold))}")
    print(f"# ratio kernel-f64 / xla-f64 where apart: median "
          f"{np.median(d_n64[apart] / np.maximum(d_x64[apart], 1e-300)) if apart.size else float('nan'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
