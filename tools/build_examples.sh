#!/usr/bin/env bash
# Installs the CMake build (build/cmake) into build/install and builds the C++ consumer projects
# (examples/cpp, examples/torchscript, examples/export) against it with find_package(FusedLoss), as
# a user would.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${FUSEDLOSS_BUILD_DIR:-build/cmake}
prefix=$PWD/build/install
torch_prefix=$(python3 -c "import torch; print(torch.utils.cmake_prefix_path)")
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# torch's CMake probes for a GPU when TORCH_CUDA_ARCH_LIST is unset, which fails on a machine
# without one under CMake < 3.26; the examples compile no CUDA, so any list will do.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0+PTX}

cmake --install "$build" --prefix "$prefix" >/dev/null
for example in cpp torchscript export; do
  cmake -S "examples/$example" -B "build/examples/$example" "${generator[@]}" "${launcher[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" >/dev/null
  cmake --build "build/examples/$example" --parallel "$(nproc)"
done
