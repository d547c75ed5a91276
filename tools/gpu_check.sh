#!/usr/bin/env bash
# The GPU check, for the lent H200 machine (its own torch, nvcc, CMake, Ninja, pytest; no network):
# builds from source for sm_90, runs GoogleTest and every CUDA test case, and the GPU benchmarks
# (pointwise, cross entropy, metrics), and writes the results under $OUT. Session 1 (pointwise
# only) took about 5 minutes; the timeouts below bound each step (about 12 minutes in all), so
# a hung step cannot eat a session's device time.
#
#   OUT=/some/dir tools/gpu_check.sh
#
# No pip install and no download: the library is loaded from the build tree (FUSEDLOSS_LIBRARY).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fusedloss_gpu_check}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
failed=0

say "== $(date -u) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$summary"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tee -a "$summary"

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build=build/gpu_check
tests=OFF
[ -f /usr/include/gtest/gtest.h ] && tests=ON
say "== build (GoogleTest: $tests)"
start=$(date +%s)
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFUSEDLOSS_BUILD_TESTS=$tests \
  -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
  >"$OUT/build.log" 2>&1 &&
  cmake --build "$build" --parallel "$(nproc)" >>"$OUT/build.log" 2>&1
build_rc=$?
say "build rc=$build_rc in $(( $(date +%s) - start )) s"
if [ $build_rc -ne 0 ]; then
  tail -n 60 "$OUT/build.log" | tee -a "$summary"
  exit 1
fi

export FUSEDLOSS_LIBRARY=$PWD/$build/libfusedloss.so
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$tests" = ON ]; then
  say "== GoogleTest"
  timeout 120 ctest --test-dir "$build" --output-on-failure >"$OUT/ctest.txt" 2>&1
  rc=$?; [ $rc -eq 0 ] || failed=1
  say "ctest rc=$rc $(grep -E 'tests passed|tests failed' "$OUT/ctest.txt")"
fi

say "== pytest (the CUDA cases; CI runs the CPU ones)"
# The image may lack hypothesis, matplotlib or expecttest: a module that cannot be collected must
# not stop the others.
timeout 240 python3 -m pytest tests/python -q -rs -p no:cacheprovider -k cuda \
  --continue-on-collection-errors >"$OUT/pytest.txt" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
say "pytest rc=$rc $(tail -n 1 "$OUT/pytest.txt")"

say "== benchmark (CUDA)"
timeout 150 python3 benchmarks/bench_pointwise.py --device cuda --sizes 16M \
  --min-run-time 0.3 >"$OUT/bench.log" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
say "benchmark rc=$rc"
cp benchmarks/results/pointwise_cuda.md benchmarks/results/pointwise_cuda.csv "$OUT/" 2>/dev/null
cat "$OUT/pointwise_cuda.md" 2>/dev/null | tee -a "$summary"
timeout 120 python3 benchmarks/bench_cross_entropy.py --device cuda --repeats 10 \
  >"$OUT/bench_cross_entropy.log" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
say "cross entropy benchmark rc=$rc"
cp benchmarks/results/cross_entropy_cuda.md benchmarks/results/cross_entropy_cuda.csv "$OUT/" 2>/dev/null
cat "$OUT/cross_entropy_cuda.md" 2>/dev/null | tee -a "$summary"
if python3 -c "import torchmetrics" 2>/dev/null; then
  timeout 60 python3 benchmarks/bench_metrics.py --device cuda >"$OUT/bench_metrics.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || failed=1
  say "metrics benchmark rc=$rc"
  cp benchmarks/results/metrics_cuda.md "$OUT/" 2>/dev/null
  cat "$OUT/metrics_cuda.md" 2>/dev/null | tee -a "$summary"
else
  say "metrics benchmark skipped: torchmetrics is not installed on this machine"
fi
say "== done $(date -u), failed=$failed"
exit $failed
