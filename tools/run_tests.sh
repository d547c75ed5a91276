#!/usr/bin/env bash
# Runs every test of fusedloss from a fresh checkout: installs what is missing, compiles the
# sources once (library, GoogleTest binary, C++ examples against the installed package), then
# runs GoogleTest (ctest) and pytest. CUDA tests skip with a reason where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh

export FUSEDLOSS_BUILD_DIR=${FUSEDLOSS_BUILD_DIR:-$PWD/build/cmake}
start=$(date +%s)
echo "== build: library and GoogleTest tests (CMake via pip install -e)"
CMAKE_ARGS="-DFUSEDLOSS_BUILD_TESTS=ON ${CMAKE_ARGS:-}" \
  python3 -m pip install --quiet --no-build-isolation --no-deps -e .
echo "== build: C++ examples against the installed package (find_package(FusedLoss))"
tools/build_examples.sh
echo "== build took $(( $(date +%s) - start )) s"

echo "== GoogleTest"
(cd "$FUSEDLOSS_BUILD_DIR" && ctest --output-on-failure)  # --test-dir needs CMake 3.20

echo "== pytest"
FUSEDLOSS_EXAMPLES_BUILD=$PWD/build/examples python3 -m pytest tests/python -q -rs "$@"
