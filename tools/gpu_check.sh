#!/usr/bin/env bash
# The GPU check, for the lent H200 machine (its own torch, nvcc, CMake, Ninja, pytest; no network).
# Two modes, each bounded to 8 minutes by a deadline that every step's timeout is cut to, so a slow
# build or a hung step cannot eat a session's device time:
#
#   OUT=/some/dir tools/gpu_check.sh [tests]     build for sm_90, GoogleTest, every CUDA test case
#   OUT=/some/dir tools/gpu_check.sh benchmark   build (reusing build/gpu_check), bench_gpu.py, and
#                                                bench_metrics.py where torchmetrics is installed
#
# Files written under $OUT (few, all at its top level: only 8 come back from the machine):
#   both:      summary.txt (what ran, return codes, failed test ids or the result tables), build.log
#   tests:     ctest.txt, pytest.txt
#   benchmark: bench.log, results.md (every result table of this run), results.tar (their .md/.csv)
#
# No pip install and no download: the library is loaded from the build tree (FUSEDLOSS_LIBRARY).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-tests}
case "$mode" in
  tests | benchmark) ;;
  *) echo "usage: $0 [tests|benchmark]" >&2; exit 2 ;;
esac
OUT=${OUT:-/tmp/fusedloss_gpu_check}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-465} ))   # under 8 minutes in all
left() { echo $(( deadline - $(date +%s) )); }
cap() { local t=$1; [ "$t" -gt "$2" ] && t=$2; [ "$t" -lt 1 ] && t=1; echo "$t"; }   # min, >= 1
failed=0

say "== $mode: $(date -u) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$summary"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" 2>&1 | tee -a "$summary"

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
build=build/gpu_check
tests=OFF
[ "$mode" = tests ] && [ -f /usr/include/gtest/gtest.h ] && tests=ON
target=()   # tests: everything (GoogleTest too); benchmark: the library only
[ "$mode" = benchmark ] && target=(--target fusedloss)
reserve=180  # seconds the build must leave: tests mode ctest + pytest, benchmark mode bench_gpu.py
[ "$mode" = benchmark ] && reserve=150
start=$(date +%s)
if [ "$mode" = benchmark ] && [ -f "$build/build.ninja" ]; then
  say "== build (reusing $build)"
  config_rc=0
else
  say "== build (GoogleTest: $tests)"
  timeout -k 5 "$(cap $(( $(left) - reserve )) 600)" \
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFUSEDLOSS_BUILD_TESTS=$tests \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
    >"$OUT/build.log" 2>&1
  config_rc=$?
fi
build_rc=$config_rc
if [ $config_rc -eq 0 ]; then
  timeout -k 5 "$(cap $(( $(left) - reserve )) 600)" \
    cmake --build "$build" --parallel "$(nproc)" ${target[@]+"${target[@]}"} >>"$OUT/build.log" 2>&1
  build_rc=$?
fi
say "build rc=$build_rc in $(( $(date +%s) - start )) s ($(left) s of the deadline left)"
if [ $build_rc -ne 0 ]; then
  tail -n 60 "$OUT/build.log" | tee -a "$summary"
  exit 1
fi

export FUSEDLOSS_LIBRARY=$PWD/$build/libfusedloss.so
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$mode" = tests ]; then
  if [ "$tests" = ON ]; then
    say "== GoogleTest"
    timeout -k 5 "$(cap $(( $(left) - 150 )) 120)" \
      ctest --test-dir "$build" --output-on-failure >"$OUT/ctest.txt" 2>&1
    rc=$?; [ $rc -eq 0 ] || failed=1
    say "ctest rc=$rc $(grep -E 'tests passed|tests failed' "$OUT/ctest.txt")"
    grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(Failed|Timeout|Exception)' "$OUT/ctest.txt" \
      | tee -a "$summary"
  fi

  say "== pytest (the CUDA cases; CI runs the CPU ones)"
  # No -x: every failure is wanted. -v names each test as it runs (a hung one is the last line);
  # the image may lack hypothesis, matplotlib or expecttest: a module that cannot be collected
  # must not stop the others.
  limit=$(cap $(( $(left) - 10 )) 300)
  timeout -k 10 "$limit" python3 -m pytest tests/python -v -rfEs --tb=short -p no:cacheprovider \
    -k cuda --continue-on-collection-errors >"$OUT/pytest.txt" 2>&1
  rc=$?; [ $rc -eq 0 ] || failed=1
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    say "pytest stopped by its ${limit} s timeout; its last line (a hung test is named there):"
    { tail -n 1 "$OUT/pytest.txt"; echo; } | tee -a "$summary"
  fi
  say "pytest rc=$rc $(grep -E '^=+ .*(passed|failed|error|skipped).* =+$' "$OUT/pytest.txt" | tail -n 1)"
  # Failed ids: pytest's short summary (FAILED/ERROR lines), or, when it was stopped before
  # writing one, the verbose lines of the tests that had failed by then.
  ids=$(grep -E '^(FAILED|ERROR) ' "$OUT/pytest.txt" | sed -E 's/^(FAILED|ERROR) //; s/ - .*//')
  [ -n "$ids" ] || ids=$(grep -oE '^[^ ]+::[^ ]+ (FAILED|ERROR)' "$OUT/pytest.txt" | cut -d' ' -f1)
  if [ -n "$ids" ]; then
    ids=$(echo "$ids" | sort -u)
    say "failed test ids ($(echo "$ids" | wc -l), at most 300 listed):"
    echo "$ids" | head -n 300 | tee -a "$summary"
  fi
else
  marker=$(mktemp)   # results written after this are this run's
  reserve_metrics=0
  python3 -c "import torchmetrics" 2>/dev/null && reserve_metrics=50
  # bench_gpu.py checks its budget before each case; the margin covers Python's start, a case
  # that runs past the budget, and collecting the results.
  budget=$(( $(left) - reserve_metrics - 45 ))
  say "== bench_gpu.py (budget ${budget} s)"
  if [ $budget -ge 60 ]; then
    timeout -k 10 $(( budget + 35 )) python3 benchmarks/bench_gpu.py --budget-seconds "$budget" \
      >"$OUT/bench.log" 2>&1
    rc=$?; [ $rc -eq 0 ] || failed=1
    say "bench_gpu.py rc=$rc"
  else
    say "bench_gpu.py skipped: the build left too little time"; failed=1
  fi
  if [ $reserve_metrics -eq 0 ]; then
    say "metrics benchmark skipped: torchmetrics is not installed on this machine"
  elif [ "$(left)" -lt 30 ]; then
    say "metrics benchmark skipped: $(left) s of the deadline left"
  else
    echo "== bench_metrics.py" >>"$OUT/bench.log"
    timeout -k 5 "$(cap $(( $(left) - 10 )) 60)" python3 benchmarks/bench_metrics.py \
      --device cuda >>"$OUT/bench.log" 2>&1
    rc=$?; [ $rc -eq 0 ] || failed=1
    say "metrics benchmark rc=$rc"
  fi
  files=()
  for name in gpu_summary gpu_cross_entropy gpu_linear gpu_first_steps gpu_pointwise metrics_cuda; do
    for ext in md csv; do
      f=benchmarks/results/$name.$ext
      [ -f "$f" ] && [ "$f" -nt "$marker" ] && files+=("$f")
    done
  done
  rm -f "$marker"
  : >"$OUT/results.md"
  for f in ${files[@]+"${files[@]}"}; do
    case "$f" in *.md) cat "$f" >>"$OUT/results.md"; echo >>"$OUT/results.md" ;; esac
  done
  [ ${#files[@]} -gt 0 ] && tar -cf "$OUT/results.tar" "${files[@]}"
  say "results: ${#files[@]} files in results.tar, their tables in results.md"
  case " ${files[*]-} " in
    *gpu_summary.md*) tee -a "$summary" <benchmarks/results/gpu_summary.md ;;
  esac
fi
say "== done $(date -u), failed=$failed, $(left) s of the deadline left"
exit $failed
