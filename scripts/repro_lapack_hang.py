"""Standalone reproducer: batched LAPACK calls deadlock XLA:CPU (jaxlib 0.10).

Needs only jax and jaxlib. Run it on a machine with few cores (the hang is most
likely with 2) or restrict it to two: ``taskset -c 0,1 python repro_lapack_hang.py``.

What it does: two independent batched solves of 144 systems of size 13 with
178 right-hand sides each, inside one jitted function, repeated. Each batched
call is split by jaxlib's ``ParallelBatchMap`` into chunks scheduled on
XLA:CPU's intra-op thread pool, and the calling worker blocks on a
``BlockingCounter`` until they finish. When both pool workers are blocked in such
waits, no thread is left to run the chunks: the process sits at 0 % CPU forever.

The script runs the computation in a child process with a time limit and
reports ``HANG`` (exit code 1) or ``OK`` (exit code 0). ``--safe`` runs the same
algebra one system per LAPACK call (``lax.map`` over the batch), which does not
hang: an unbatched call runs inline, never on the pool.
"""

import argparse
import multiprocessing as mp
import sys
import time


def work(safe: bool, repeats: int) -> None:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    K, d, r = 144, 13, 178
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (K, d, d)) + 4.0 * jnp.eye(d)
    b = jax.random.normal(jax.random.fold_in(key, 1), (K, d, r))

    def solve(a, b):
        if safe:
            return jax.lax.map(lambda ab: jnp.linalg.solve(*ab), (a, b))
        return jnp.linalg.solve(a, b)

    @jax.jit
    def f(a, b):
        # two independent batched solves, so that two pool workers enter them at once
        x1 = solve(a, b)
        x2 = solve(a + 1.0, jnp.sin(b))
        return jnp.sum(x1) + jnp.sum(x2)

    for i in range(repeats):
        f(a + i, b).block_until_ready()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--safe", action="store_true", help="one LAPACK call per system (does not hang)")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before the run counts as hung")
    args = p.parse_args()
    import jax  # noqa: F401 (versions for the report)
    import jaxlib

    print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, cpu count {mp.cpu_count()}")
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=work, args=(args.safe, args.repeats))
    t0 = time.perf_counter()
    proc.start()
    proc.join(args.timeout)
    if proc.is_alive():
        proc.kill()
        print(f"HANG: no result after {args.timeout:.0f} s")
        return 1
    print(f"OK: {args.repeats} calls in {time.perf_counter() - t0:.1f} s (exit code {proc.exitcode})")
    return 0 if proc.exitcode == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
