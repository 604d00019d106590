"""``vaefp phase`` on real data: wall time, and the clusters against k-means and Ward linkage.

For iris (d = 4), wine (d = 13) and digits (d = 64; 1797 points) from scikit-learn
(bundled; no download): each data set is written to a CSV with a text class
column, then the command a user would type is run in a fresh process and timed
(wall clock, interpreter start, JAX compilation and the writing of every output
included):

    vaefp phase --data <name>.csv --label-column class --standardize --quiet --out <dir>

The run is loaded back (``vaefp_jax.load``) and the level with as many clusters
as classes is scored by the adjusted Rand index; k-means (10 restarts, seed 0)
and Ward linkage on the same standardised data, with as many clusters as
classes, are scored beside it. Prints one Markdown row per data set.

    python benchmarks/phase.py [--sets iris wine digits] [--extra "--k 16 --num-betas 64"]
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from sweep import cpu_description  # noqa: E402  (benchmarks/sweep.py)


def _write(path, data, target_names, target):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"f{j}" for j in range(data.shape[1])] + ["class"])
        for row, t in zip(data, target):
            w.writerow([repr(float(v)) for v in row] + [str(target_names[t])])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["iris", "wine", "digits"])
    ap.add_argument("--extra", default="", help="more vaefp phase options")
    args = ap.parse_args(argv)
    from sklearn import datasets
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.metrics import adjusted_rand_score

    import vaefp_jax as vf

    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_description()}, vaefp_jax {vf.__version__}; "
          f"vaefp phase {args.extra or '(defaults)'}")
    print("| data | n × d | classes | wall s | β | β_c (refined, last 3) | last merge / λ_max | clusters | "
          "ARI vaefp | ARI k-means | ARI Ward | converged |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        d = getattr(datasets, f"load_{name}")()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.csv")
            _write(path, d.data, d.target_names, d.target)
            out = os.path.join(tmp, "run")
            cmd = [sys.executable, "-m", "vaefp_jax", "phase", "--data", path, "--label-column", "class",
                   "--standardize", "--quiet", "--out", out] + shlex.split(args.extra)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(f"| {name} | failed (exit {proc.returncode}): {proc.stderr.strip()[-200:]} |")
                continue
            r = vf.load(out)
        z = r.x
        k = len(d.target_names)
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(z)
        ward = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(z)
        s = r.score()
        lam = vf.phase.scales.covariance_lambda_max(z)
        refined = [c.refined for c in r.critical if np.isfinite(c.refined)][-3:]
        top = "" if r.tree.complete else f" (incomplete: {int(r.tree.counts[-1])} clusters at the top β)"
        print(f"| {name} | {z.shape[0]} × {z.shape[1]} | {k} | {wall:.1f} | {r.beta.size} in "
              f"[{r.beta[0]:.3g}, {r.beta[-1]:.3g}] | {', '.join(f'{b:.4g}' for b in refined)} | "
              f"{r.tree.merges[-1].height / lam:.6f}{top} | {s['clusters']} | {s['ari']:.3f} | "
              f"{adjusted_rand_score(d.target, km):.3f} | {adjusted_rand_score(d.target, ward):.3f} | "
              f"{int(r.converged.sum())}/{r.beta.size} |", flush=True)


if __name__ == "__main__":
    main()
