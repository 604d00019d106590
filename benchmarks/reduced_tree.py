"""The reduced phase analysis (issue 34) against its baselines, in one run per part.

    python benchmarks/reduced_tree.py --part speed      # digits raw → 64 clusters vs the NumPy baseline
    python benchmarks/reduced_tree.py --part ari        # ARI table vs k-means and Ward
    python benchmarks/reduced_tree.py --part mnist      # MNIST test set (n = 10,000) → 64 clusters
    python benchmarks/reduced_tree.py --part peers      # k-means and Ward on the MNIST test set
    python benchmarks/reduced_tree.py --part ward       # Ward's time and memory against n (crossover)

Float64, on whatever machine runs it (RESULTS.md records which). The tree is
``vaefp_jax.phase.annealing.anneal``; its ARI is read as ``vaefp phase`` reads it: the coarsest
level with as many significant clusters (mass ≥ 1 %) as classes, nested labels. The NumPy
baseline is benchmarks/numpy_annealing.py (plain EM, fixed cooling factor, splits detected on
the grid), run to the same number of clusters in the same process, one BLAS thread and two.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.cluster import AgglomerativeClustering, KMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

import vaefp_jax as vf  # noqa: E402
from vaefp_jax.phase.annealing import anneal  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def load(name: str, standardize: bool = False, n: int | None = None):
    if name == "mnist":
        from vaefp_jax.mnist import read_idx

        x, y = read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"),
                        os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
        x = x.reshape(len(x), -1).astype(np.float64)
    else:
        d = getattr(datasets, f"load_{name}")()
        x, y = d.data.astype(np.float64), d.target
    if n is not None:
        x, y = x[:n], y[:n]
    if standardize:
        std = x.std(0)
        x = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    return x, y


def tree_score(x, y, max_clusters=None, min_mass=0.01):
    t0 = time.perf_counter()
    res = vf.split_analysis(x, true_labels=y, max_clusters=max_clusters, min_mass=min_mass, cross_check=0)
    return res, time.perf_counter() - t0


def peers(x, y):
    k = len(np.unique(y))
    t0 = time.perf_counter()
    km = KMeans(k, n_init=10, random_state=0).fit_predict(x)
    t_km = time.perf_counter() - t0
    t0 = time.perf_counter()
    ward = AgglomerativeClustering(k, linkage="ward").fit_predict(x)
    t_ward = time.perf_counter() - t0
    return adjusted_rand_score(y, km), t_km, adjusted_rand_score(y, ward), t_ward


def part_speed(args):
    from numpy_annealing import numpy_anneal
    from threadpoolctl import threadpool_limits

    x, y = load("digits")
    lam = np.linalg.eigvalsh(np.cov(x.T, bias=True)).max()
    for run in ("cold (with compilation)", "warm"):
        t0 = time.perf_counter()
        tree = anneal(x, max_clusters=64)
        s = time.perf_counter() - t0
        exact = [sp for sp in tree.splits if abs(sp.condition) <= 1e-8]
        print(f"vaefp_jax anneal, {run}: {s:.1f} s, {len(tree.levels)} levels, {len(tree.splits)} splits "
              f"({len(exact)} exact, max |cond| of those {max(abs(sp.condition) for sp in exact):.1e}), "
              f"{sum(sp.solves for sp in tree.splits)} solves, {sum(sp.steps for sp in tree.splits)} steps; "
              f"first beta_c/lambda_max - 1 = {tree.splits[0].beta / lam - 1:.1e}", flush=True)
    for cooling in (0.95, 0.99):
        for threads in args.blas_threads:
            with threadpool_limits(threads):
                t0 = time.perf_counter()
                base = numpy_anneal(x, max_clusters=64, cooling=cooling)
                s_np = time.perf_counter() - t0
            print(f"NumPy baseline, cooling {cooling}, {threads} BLAS thread(s): {s_np:.1f} s, {base.em_steps} EM "
                  f"steps, {base.n_betas} beta, beta_c resolution {100 * (1 - cooling):.0f} %", flush=True)


def part_ari(args):
    print(f"{'data':>22} {'n':>5} {'d':>3} {'k':>2} {'tree s':>7} {'level':>9} {'ARI tree':>8} {'k-means':>7} "
          f"{'Ward':>6} {'k-means s':>9} {'Ward s':>7} {'exact':>7}")
    for name, std in (("iris", True), ("wine", True), ("breast_cancer", True), ("digits", False),
                      ("digits", True), ("iris", False), ("wine", False)):
        x, y = load(name, std)
        res, s = tree_score(x, y)
        sc = res.score()
        km, t_km, ward, t_ward = peers(x, y)
        exact = sum(sp.exact for sp in res.splits)
        print(f"{name + (' (std)' if std else ' (raw)'):>22} {x.shape[0]:>5} {x.shape[1]:>3} {sc['classes']:>2} "
              f"{s:7.1f} {sc['clusters']:>3}/{sc['significant']:<3}  {sc['ari']:8.3f} {km:7.3f} {ward:6.3f} "
              f"{t_km:9.2f} {t_ward:7.2f} {exact:>3}/{len(res.splits):<3}", flush=True)


def part_mnist(args):
    x, y = load("mnist", n=args.n)
    t0 = time.perf_counter()
    tree = anneal(x, max_clusters=64, progress=lambda m, b: print(f"  {m} clusters at beta {b:.6g}, "
                                                                  f"{time.perf_counter() - t0:.0f} s", flush=True)
                  if m % 8 == 0 else None)
    s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    exact = sum(abs(sp.condition) <= 1e-8 for sp in tree.splits)
    print(f"MNIST n = {x.shape[0]}: 64 clusters in {s:.1f} s, peak RSS {rss:.2f} GB, {exact}/{len(tree.splits)} exact "
          f"splits, {sum(sp.solves for sp in tree.splits)} solves, {sum(sp.steps for sp in tree.splits)} steps",
          flush=True)
    res, s2 = tree_score(x, y, max_clusters=64)
    sc = res.score()
    km, t_km, ward, t_ward = peers(x, y)
    print(f"  score: level {sc['clusters']} clusters ({sc['significant']} significant) ARI {sc['ari']:.3f}; "
          f"k-means {km:.3f} ({t_km:.1f} s); Ward {ward:.3f} ({t_ward:.1f} s)", flush=True)


def part_peers(args):
    x, y = load("mnist", n=args.n)
    km, t_km, ward, t_ward = peers(x, y)
    print(f"MNIST n = {x.shape[0]}: k-means (k = 10, 10 restarts) ARI {km:.3f} in {t_km:.1f} s; Ward ARI {ward:.3f} "
          f"in {t_ward:.1f} s", flush=True)


def part_ward(args):
    for n in (2000, 5000, 10000):
        x, y = load("mnist", n=n)
        t0 = time.perf_counter()
        AgglomerativeClustering(10, linkage="ward").fit(x)
        t_ward = time.perf_counter() - t0
        print(f"Ward n = {n}: {t_ward:.1f} s (full tree; memory ~ n²/2 float64 = {n * n * 4 / 1e9:.2f} GB)",
              flush=True)
        if n <= args.n:
            t0 = time.perf_counter()
            anneal(x, max_clusters=16)
            print(f"  reduced tree to 16 clusters: {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["speed", "ari", "mnist", "peers", "ward"], required=True)
    p.add_argument("--n", type=int, default=10000, help="mnist: points of the test set used")
    p.add_argument("--blas-threads", type=int, nargs="+", default=[1, 2],
                   help="speed: BLAS threads of the NumPy baseline runs (each count one run per cooling factor)")
    args = p.parse_args()
    print(f"cpu: {vf.runs.cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__}", flush=True)
    {"speed": part_speed, "ari": part_ari, "mnist": part_mnist, "peers": part_peers,
     "ward": part_ward}[args.part](args)


if __name__ == "__main__":
    main()
