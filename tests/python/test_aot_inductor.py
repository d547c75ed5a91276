"""AOTInductor: the .pt2 package of examples/export (a classifier whose forward returns fusedloss
losses and metrics, exported with a dynamic batch) runs with the eager values in Python
(aoti_load_package) at two batch sizes, on the CPU and on CUDA where there is a device, and in a
C++ program with no Python (run_pt2, linked against the installed FusedLoss::fusedloss, CPU). One
package per device, compiled once for the module."""

import os
import subprocess
import sys

import pytest
import torch

import fusedloss  # noqa: F401  (the package's fusedloss calls need the library loaded)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "export"))
import export_and_package  # noqa: E402

EXAMPLES_BUILD = os.environ.get("FUSEDLOSS_EXAMPLES_BUILD")


PACKAGES = {}


def package_for(device, tmp_path_factory):
    """The .pt2 for `device`, compiled once per device for the module."""
    if device not in PACKAGES:
        path = str(tmp_path_factory.mktemp(f"aoti_{device}") / "model.pt2")
        export_and_package.build_package(path, device)
        PACKAGES[device] = path
    return PACKAGES[device]


def eager(batch):
    with torch.no_grad():
        return export_and_package.ScoredClassifier().eval()(*export_and_package.example_inputs(batch))


@pytest.mark.parametrize("batch", [64, 7])
def test_aot_inductor_package_runs_in_python(batch, device, tmp_path_factory):
    model = torch._inductor.aoti_load_package(package_for(device, tmp_path_factory))
    got = model(*(t.to(device) for t in export_and_package.example_inputs(batch)))
    for g, want in zip(got, eager(batch)):
        torch.testing.assert_close(g.cpu(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not EXAMPLES_BUILD, reason="C++ examples not built: tools/run_tests.sh builds "
                    "them against the installed package and sets FUSEDLOSS_EXAMPLES_BUILD")
def test_aot_inductor_package_runs_in_cpp_without_python(tmp_path_factory):
    package = package_for("cpu", tmp_path_factory)
    binary = os.path.join(EXAMPLES_BUILD, "export", "run_pt2")
    out = subprocess.run([binary, package], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("pt2 "))
    values = [float(v) for v in line.split()[1:]]
    assert values == pytest.approx([v.item() for v in eager(64)], rel=1e-5, abs=1e-6)
