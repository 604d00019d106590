#!/usr/bin/env bash
# The GPU checks of issue 7 as one short script, for a session that is lent a GPU
# (the device tool: at most 600 s a call, ~15 min in all, so run it in two calls,
# `tests` then `bench`, each well under 600 s on one H100/H200 with JAX/CUDA
# installed). Results go to $OUT (or ./gpu_check) for benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh tests    # ~3 min
#   bash benchmarks/gpu_check.sh bench    # ~6 min
#
# tests: tests/test_pallas_map.py on the GPU, where PallasMap compiles the Triton kernels
#        (interpret=None: compiled off CPU), so the interpret-mode tests of CPU CI
#        check the real kernels against vaefp_jax.step and NumPy (float32 and
#        float64); tests/test_solver.py and test_schedule.py: the XLA path on GPU
#        (each file only if it exists).
# bench: benchmarks/floor.py at the issue's GPU setting (1024 β × 32×32 tiles ×
#        n = 120 × 400 steps; target ≤ 0.5 s and within 5× of the floor; row (l):
#        the data-first dense map, to choose the GPU layout), three PallasMap block shapes, benchmarks/sweep.py at
#        1024 β (per-β stopping; rows c, d, e, i, j: ours and the optimistix peers), and
#        XLA's memory plan on the GPU for the docs/scale.md table (n = 10⁴, K = 16384).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
stage="${1:-all}"
mkdir -p "$out"
# The device image has JAX with CUDA, pytest, hypothesis, optimistix, flax, optax, chex and tqdm
# (.library/device/KINDS.md) and no network: run from the source tree instead of installing.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python() { python3 "$@"; }
python -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$out/devices.txt"

if [[ "$stage" == tests || "$stage" == all ]]; then
    files=()
    for f in tests/test_pallas_map.py tests/test_solver.py tests/test_schedule.py; do
        [[ -f "$f" ]] && files+=("$f")
    done
    timeout 200 python -m pytest -q -p no:cacheprovider "${files[@]}" 2>&1 | tail -15 | tee "$out/tests.txt"
fi

if [[ "$stage" == bench || "$stage" == all ]]; then
    timeout 150 python benchmarks/floor.py --num-betas 1024 --repeats 3 2>&1 | tee "$out/floor_1024.txt"
    for blocks in "32 128 4" "128 128 8" "64 256 8"; do   # PallasMap data_block, tile_block, num_warps
        set -- $blocks
        timeout 45 python benchmarks/floor.py --num-betas 1024 --repeats 2 --methods k --data-block "$1" \
            --tile-block "$2" --num-warps "$3" 2>&1 | tail -1 | tee -a "$out/floor_blocks.txt"
    done
    timeout 150 python benchmarks/sweep.py --num-betas 1024 --repeats 2 --methods cdeij 2>&1 | tee "$out/sweep_1024.txt"
    timeout 60 python - <<'EOF' 2>&1 | tee "$out/memory.txt"
import jax, jax.numpy as jnp
import vaefp_jax as vf
from vaefp_jax.engine.core import solve_core
S, f32 = jax.ShapeDtypeStruct, jnp.float32
key = jax.random.PRNGKey(0)
for d, B, lanes in [(2, 64, 64), (2, 1024, 1024), (784, 64, 8)]:
    n, K = 10_000, 16_384
    args = (S((n, d), f32), S((K,), f32), {}, {"beta": S((B,), f32)}, S((K, d), f32), key)
    static = dict(iteration=vf.Damped.paper(), constraint=vf.Unconstrained(), schedule=vf.Vmapped(batch_size=lanes))
    maps = [("dense", vf.DenseMap()), ("blocked", vf.BlockedMap(1024, 1024))]
    if d <= 8:
        maps.append(("pallas", vf.PallasMap()))
    for name, F in maps:
        try:
            m = solve_core.lower(*args, step_map=F, **static).compile().memory_analysis()
            print(f"d={d} B={B} lanes={lanes} {name}: temp {m.temp_size_in_bytes / 1e9:.2f} GB, "
                  f"args+out {(m.argument_size_in_bytes + m.output_size_in_bytes) / 1e9:.2f} GB")
        except Exception as e:  # an out-of-memory plan is a result too
            print(f"d={d} B={B} lanes={lanes} {name}: {type(e).__name__}: {str(e)[:200]}")
EOF
fi
echo "done: $out"
