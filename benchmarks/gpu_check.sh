#!/usr/bin/env bash
# The GPU checks of issue 7 as one short script, for a session that is lent a GPU
# (the device tool: at most 600 s a call, ~15 min in all, so run it in two calls,
# `tests` then `bench`, each well under 600 s on one H100/H200 with JAX/CUDA
# installed). Results go to $OUT (or ./gpu_check) for benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh tests    # ~3 min
#   bash benchmarks/gpu_check.sh bench    # ~6 min
#
# tests: tests/test_fused.py on the GPU, where FusedMap compiles the Triton kernels
#        (interpret=False by default off CPU), so the interpret-mode tests of CPU CI
#        check the real kernels against vaefp_jax.step and NumPy (float32 and
#        float64); tests/test_solver.py and test_schedule.py: the XLA path on GPU.
# bench: benchmarks/floor.py at the issue's GPU setting (1024 β × 32×32 tiles ×
#        n = 120 × 400 steps; target ≤ 0.5 s and within 5× of the floor; row (l):
#        the data-first dense map, to choose the GPU layout), three FusedMap block shapes, benchmarks/sweep.py at 1024 β (per-β stopping), and
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
    timeout 200 python -m pytest -q -p no:cacheprovider tests/test_fused.py tests/test_solver.py \
        tests/test_schedule.py 2>&1 | tail -15 | tee "$out/tests.txt"
fi

if [[ "$stage" == bench || "$stage" == all ]]; then
    timeout 150 python benchmarks/floor.py --num-betas 1024 --repeats 3 2>&1 | tee "$out/floor_1024.txt"
    for blocks in "32 128 4" "128 128 8" "64 256 8"; do   # FusedMap data_block, tile_block, num_warps
        set -- $blocks
        timeout 45 python benchmarks/floor.py --num-betas 1024 --repeats 2 --methods k --data-block "$1" \
            --tile-block "$2" --num-warps "$3" 2>&1 | tail -1 | tee -a "$out/floor_blocks.txt"
    done
    timeout 120 python benchmarks/sweep.py --num-betas 1024 --repeats 2 --methods cdei 2>&1 | tee "$out/sweep_1024.txt"
    timeout 60 python - <<'EOF' 2>&1 | tee "$out/memory.txt"
import jax, jax.numpy as jnp
from vaefp_jax import streaming
from vaefp_jax.fused import FusedMap
from vaefp_jax.solver import _solve_batched
S, f32 = jax.ShapeDtypeStruct, jnp.float32
for d, B, lanes in [(2, 64, 64), (2, 1024, 1024), (784, 64, 8)]:
    n, K = 10_000, 16_384
    args = (S((n, d), f32), S((B,), f32), S((K,), f32), S((K, d), f32), S((), f32), S((), f32))
    static = dict(max_steps=400, record_every=0, batch_size=lanes)
    maps = [("dense", None), ("streamed", streaming.StreamedMap(1024, 1024))]
    if d <= 8:
        maps.append(("fused", FusedMap()))
    for name, F in maps:
        kw = static if F is None else dict(static, step_map=F)
        try:
            m = _solve_batched.lower(*args, **kw).compile().memory_analysis()
            print(f"d={d} B={B} lanes={lanes} {name}: temp {m.temp_size_in_bytes / 1e9:.2f} GB, "
                  f"args+out {(m.argument_size_in_bytes + m.output_size_in_bytes) / 1e9:.2f} GB")
        except Exception as e:  # an out-of-memory plan is a result too
            print(f"d={d} B={B} lanes={lanes} {name}: {type(e).__name__}: {str(e)[:200]}")
EOF
fi
echo "done: $out"
