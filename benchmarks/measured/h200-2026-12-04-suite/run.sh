#!/bin/bash
# The device run of issue 22 (one H200, 2026-12-04): benchmarks/gpu_suite.py with a 515 s budget.
# Run from the repo root with the wheels the image lacks in .whl/ (pyamg, h5netcdf, dask, distributed
# and their small dependencies, neuraloperator, tensorly, tensorly-torch, zencfg, configmypy), the
# CPU-trained networks in benchmarks/results/precond-full2/runs and the Burgers data of the zoo cell
# in benchmarks/results/gpu-suite-zoo/data (made on the CPU beforehand, the same seeds as zoo.py's).
set -u
D=benchmarks/measured/h200-2026-12-04-suite
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $D/gpu.txt
python3 -c "import sciml, pyamg, h5netcdf, dask, distributed, neuralop; print('imports ok', sciml.__version__)" || exit 1
timeout ${SUITE_TIMEOUT:-540} python3 benchmarks/gpu_suite.py --budget ${SUITE_BUDGET:-515} --out $D
