"""Packaging: the wheel installs and imports in a fresh virtual environment (with the same torch),
and the `cmake --install` tree still configures a consumer after being moved elsewhere."""

import os
import shutil
import subprocess
import sys
import venv
import zipfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL_TREE = os.path.join(ROOT, "build", "install")


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


BUILD_DIR = os.environ.get("FUSEDLOSS_BUILD_DIR", os.path.join(ROOT, "build", "cmake"))


@pytest.mark.skipif(not os.path.exists(os.path.join(BUILD_DIR, "CMakeCache.txt")),
                    reason=f"no CMake build directory at {BUILD_DIR} (tools/run_tests.sh creates it)")
def test_wheel_installs_and_imports_in_a_fresh_venv(tmp_path):
    pytest.importorskip("ensurepip", reason="this Python has no ensurepip to seed a venv "
                        "(Debian: apt-get install python3-venv)")
    wheel_dir = tmp_path / "wheel"
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
         "-w", str(wheel_dir), ROOT])
    (wheel,) = wheel_dir.glob("fusedloss-*.whl")
    # The wheel requires exactly the torch release it was built against (any local label).
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))
    requires = [line for line in metadata.decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires == [f"Requires-Dist: torch=={torch.__version__.split('+')[0]}"], requires
    # The venv sees the torch this test runs with (the library is tied to it) through a .pth
    # line, and nothing else of ours. Not system_site_packages: those are the base interpreter's,
    # another torch when the tests run in a virtual environment.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    torch_site = os.path.dirname(os.path.dirname(torch.__file__))
    with open(os.path.join(site, "torch_under_test.pth"), "w") as f:
        f.write(torch_site + "\n")
    run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)])
    out = run([python, "-c", "import torch, fusedloss; "
               "print(fusedloss.library_path); "
               "print(fusedloss.functional.mse_loss(torch.ones(3), torch.zeros(3)).item())"],
              cwd=str(tmp_path), env={k: v for k, v in os.environ.items()
                                      if k not in ("FUSEDLOSS_LIBRARY", "PYTHONPATH")})
    library_path, value = out.split()
    assert library_path.startswith(str(env_dir)) and float(value) == 1.0


@pytest.mark.skipif(not os.path.isdir(INSTALL_TREE),
                    reason="no install tree (tools/build_examples.sh installs to build/install)")
def test_install_tree_is_relocatable(tmp_path):
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(INSTALL_TREE, moved)
    # Nothing in the tree may point back at where it was installed.
    for path in moved.rglob("*.cmake"):
        assert INSTALL_TREE not in path.read_text(), f"{path} names {INSTALL_TREE}"
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0+PTX"))
    out = run(["cmake", "-S", os.path.join(ROOT, "examples", "cpp"), "-B", str(tmp_path / "build"),
               f"-DCMAKE_PREFIX_PATH={moved};{torch.utils.cmake_prefix_path}",
               "--log-level=ERROR"], env=env)
    cache = (tmp_path / "build" / "CMakeCache.txt").read_text()
    assert f"FusedLoss_DIR:PATH={moved}" in cache, out
