#!/bin/bash
# One device run of benchmarks/gpu_suite.py (issue 22) inside a 600 s call: a 515 s budget.
# Run from the repo root of a machine whose Python has torch with CUDA and no network: the wheels the
# image lacks in .whl/ (pyamg, h5netcdf, dask, distributed, partd, locket, tblib, zict, tornado,
# neuraloperator, tensorly, tensorly-torch, zencfg, configmypy), and, to save GPU time, the networks
# trained beforehand on a CPU (python benchmarks/precond.py --train-only --families darcy,condiff-high
# --methods nmg,nmg2,hints --out benchmarks/results/precond-full2) and the Burgers data of the zoo cell
# (zoo.make_data("burgers", False, Path("benchmarks/results/gpu-suite-zoo/data"))), carried along.
#   D=benchmarks/measured/h200-$(date +%F) bash benchmarks/gpu_suite_device.sh
set -u
D=${D:-benchmarks/measured/gpu-$(date +%F)}
mkdir -p $D
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $D/gpu.txt
python3 -c "import sciml, pyamg, h5netcdf, dask, distributed, neuralop; print('imports ok', sciml.__version__)" || exit 1
timeout ${SUITE_TIMEOUT:-540} python3 benchmarks/gpu_suite.py --budget ${SUITE_BUDGET:-515} --out $D
