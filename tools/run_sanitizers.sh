#!/usr/bin/env bash
# Builds the library and the GoogleTest tests with AddressSanitizer and UndefinedBehaviorSanitizer
# (CPU kernels; CUDA off) in build/asan, then runs the GoogleTest binary and the pytest suite
# against that library. Any report fails the run. Expects tools/install_deps.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/asan
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0+PTX}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUSEDLOSS_WITH_CUDA=OFF \
  -DFUSEDLOSS_BUILD_TESTS=ON "${launcher[@]}" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" >/dev/null
cmake --build "$build" --parallel "$(nproc)"

# torch itself is not instrumented and keeps caches alive at exit: no leak checking.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
echo "== GoogleTest under ASan+UBSan"
"$build/tests/cpp/fusedloss_cpp_tests" --gtest_brief=1

echo "== pytest under ASan+UBSan (torch.compile and opcheck excluded: they only retrace; multi-process tests too)"
LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)" \
  FUSEDLOSS_LIBRARY=$PWD/$build/libfusedloss.so FUSEDLOSS_SKIP_HUGE=1 \
  python3 -m pytest tests/python -q -p no:cacheprovider \
  -k "not compile and not opcheck and not inductor and not export and not torchscript and not cpp and not wheel and not relocatable and not distributed" "$@"
