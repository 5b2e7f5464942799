#!/bin/bash
# The device run of 2026-12-04 (one H200): NMG against PCG-MG on the same GPU at 512^2 and 1024^2
# (issue 19), loader throughput and fp32/bf16 training on the GPU (issue 20). Run from the repo root
# with the wheels of pyamg and h5netcdf in .whl/ and the CPU-trained NMG runs in
# benchmarks/results/precond-full2/runs (the networks of benchmarks/measured/cpu-2026-12-04/nmg-precond.md).
set -u
OUT=${OUT:-benchmarks/measured/h200-2026-12-04}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > $OUT/install.log 2>&1 || { cat $OUT/install.log; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python3 -m sciml --version || exit 1
timeout 150 python3 benchmarks/precond.py --out benchmarks/results/precond-full2 --methods pcg-amg,pcg-mg,nmg \
    --mg-sizes 512,1024 --sizes 512 --device cuda 2>&1 | tee $OUT/precond.log
cp benchmarks/results/precond-full2/precond.md $OUT/nmg-precond-gpu.md
cp benchmarks/results/precond-full2/precond.json $OUT/nmg-precond-gpu.json
timeout 100 python3 benchmarks/memory.py --device cuda --skip memory --epochs 10 --out $OUT --work /tmp/memwork 2>&1 \
    | tee $OUT/memory.log
