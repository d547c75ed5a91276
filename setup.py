"""Builds libfusedloss.so through CMakeLists.txt (the one description of the build) and ships it
inside the Python package as fusedloss/lib/libfusedloss.so.

    pip install --no-build-isolation .       # or -e . for an editable install

--no-build-isolation: the build needs the torch that is installed (an isolated build would
download a second one). Environment:
    CMAKE_ARGS              extra CMake arguments, e.g. "-DFUSEDLOSS_WITH_CUDA=OFF"
    FUSEDLOSS_BUILD_DIR     CMake build directory (default: build/cmake); an existing configured
                            directory is reused, so the sources compile once
    TORCH_CUDA_ARCH_LIST    CUDA architectures (default 9.0+PTX, see cmake/cuda_architectures.cmake)

The package requires exactly the torch release it is built against (torch==X.Y.Z, any local
build label such as +cu130): the library links that torch's C++ ABI, and a different release
fails at import.
"""

import os
import shlex
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
LIBRARY_EXTENSION = "fusedloss.lib.libfusedloss"


class CMakeBuild(build_ext):
    def get_ext_filename(self, fullname):
        # Called with the full dotted name and with its last part alone; either way the file
        # keeps the plain name a C++ linker expects, not Python's extension-module suffix.
        parts = fullname.split(".")
        if parts[-1] == LIBRARY_EXTENSION.split(".")[-1]:
            return os.path.join(*parts[:-1], "libfusedloss.so")
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        import torch

        build_dir = os.environ.get("FUSEDLOSS_BUILD_DIR", os.path.join(ROOT, "build", "cmake"))
        args = [
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        ]
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            args.append("-DCMAKE_BUILD_TYPE=Release")
            if shutil.which("ninja"):
                args += ["-G", "Ninja"]
            if shutil.which("ccache"):
                args += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
                         "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"]
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, *args])
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", "--build", build_dir, "--parallel", jobs])

        built = os.path.realpath(os.path.join(build_dir, "libfusedloss.so"))
        destination = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if getattr(self, "editable_mode", False):  # setuptools then copies it into the source tree
            os.makedirs(os.path.join(ROOT, "fusedloss", "lib"), exist_ok=True)
        shutil.copyfile(built, destination)


def torch_requirement():
    """torch==<the release this build links>, from the torch that is installed."""
    try:
        import torch
    except ImportError:  # metadata without a torch to build against: the oldest supported
        return "torch>=2.6"
    return "torch==" + torch.__version__.split("+")[0]


setup(
    ext_modules=[Extension(LIBRARY_EXTENSION, sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[torch_requirement()],
)
