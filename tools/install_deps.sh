#!/usr/bin/env bash
# Installs what building and testing fusedloss needs, skipping whatever is already there:
# a C++ toolchain, CMake, Ninja, GoogleTest and ccache (Debian packages), torch (pinned) and the
# Python test tools (PyPI). Safe to run again.
set -euo pipefail

TORCH_SPEC=${FUSEDLOSS_TORCH_SPEC:-torch==2.14.1}
# A Debian python3 from apt (PEP 668) refuses pip installs outside a virtual environment; this
# script installs into the interpreter it is given (pip before 23.0.1 ignores the variable).
export PIP_BREAK_SYSTEM_PACKAGES=1

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v cmake >/dev/null || missing+=(cmake)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v ccache >/dev/null || missing+=(ccache)
[ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# The packaging test builds a wheel and installs it into a fresh virtual environment.
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: apt-get install ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install_deps: run as root, or install sudo" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if python3 -c "import torch" 2>/dev/null; then
  echo "install_deps: torch $(python3 -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "install_deps: pip install $TORCH_SPEC (a CUDA build, several GB)"
  python3 -m pip install --quiet "$TORCH_SPEC"
else
  # Without nvcc the CUDA build's CMake files fail at find_package(Torch): take the CPU build.
  echo "install_deps: no CUDA toolkit: pip install $TORCH_SPEC from the CPU-only index"
  python3 -m pip install --quiet "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
fi

python_missing=()
# --no-build-isolation builds need setuptools >= 64 and wheel in the environment itself.
python3 -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" \
  2>/dev/null || python_missing+=("setuptools>=64")
python3 -c "import wheel" 2>/dev/null || python_missing+=(wheel)
for module in pytest numpy expecttest hypothesis matplotlib tqdm; do
  python3 -c "import $module" 2>/dev/null || python_missing+=("$module")
done
# The metrics' oracles, pinned to the releases the tests were written against: torchmetrics, and
# sklearn.metrics for the exact threshold metrics.
python3 -c "import torchmetrics" 2>/dev/null || python_missing+=("torchmetrics==1.9.0")
python3 -c "import sklearn" 2>/dev/null || python_missing+=("scikit-learn==1.9.1")
if [ ${#python_missing[@]} -gt 0 ]; then
  echo "install_deps: pip install ${python_missing[*]}"
  python3 -m pip install --quiet "${python_missing[@]}"
fi
