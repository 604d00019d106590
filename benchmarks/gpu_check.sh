#!/usr/bin/env bash
# The GPU checks of issue 7 as one short script, for a session that is lent a GPU
# (the device tool): about 5 minutes on one H100/H200 once JAX with CUDA is
# installed. Results go to $OUT (or ./gpu_check) for benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_check.sh
#
# 1. tests/test_fused.py on the GPU: FusedMap's default there is the compiled
#    Triton kernels (interpret=False), so the interpret-mode tests of CPU CI now
#    check the real kernels against vaefp_jax.step and NumPy (float32 and float64);
#    tests/test_solver.py and tests/test_schedule.py: the XLA path on the GPU.
# 2. benchmarks/floor.py at the issue's GPU setting (1024 β × 32×32 tiles × n = 120
#    × 400 steps): measured exp / FMA / bandwidth, the floor, XLA and the kernels
#    as multiples of it (target: ≤ 0.5 s and within 5× of the floor).
# 3. benchmarks/sweep.py at 1024 β (paper protocol, per-β stopping), and XLA's
#    memory plan on the GPU for the docs/scale.md table (n = 10⁴, K = 16384).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
python -m pip install -q -e ".[test,bench]" 2>&1 | tail -2
python -c "import jax; print(jax.devices())" | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee -a "$out/devices.txt"
timeout 300 python -m pytest -q -p no:cacheprovider tests/test_fused.py tests/test_solver.py tests/test_schedule.py \
    2>&1 | tail -15 | tee "$out/tests.txt"
timeout 240 python benchmarks/floor.py --num-betas 1024 --repeats 3 2>&1 | tee "$out/floor_1024.txt"
timeout 120 python benchmarks/floor.py --num-betas 64 --repeats 3 2>&1 | tee "$out/floor_64.txt"
timeout 240 python benchmarks/sweep.py --num-betas 1024 --repeats 3 --methods cdegh 2>&1 | tee "$out/sweep_1024.txt"
timeout 120 python - <<'EOF' 2>&1 | tee "$out/memory.txt"
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
echo "done: $out"
