"""TorchScript and C++ users: scripted modules that call the ops, saved and loaded in a fresh
Python process and in a C++ program linked against the installed library (find_package)."""

import os
import subprocess
import sys

import pytest
import torch

import fusedloss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "torchscript"))
import script_and_save  # noqa: E402

EXAMPLES_BUILD = os.environ.get("FUSEDLOSS_EXAMPLES_BUILD")
needs_cpp_examples = pytest.mark.skipif(
    not EXAMPLES_BUILD,
    reason="C++ examples not built: tools/run_tests.sh builds them against the installed package "
    "and sets FUSEDLOSS_EXAMPLES_BUILD",
)


def parse_report(stdout):
    values = dict(line.split() for line in stdout.strip().splitlines() if line.count(" ") == 1)
    return float(values["loss"]), float(values["grad_norm"])


def eager_report(module):
    x, y = script_and_save.example_inputs()
    loss = module(x, y)
    loss.backward()
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in module.parameters()))
    return loss.item(), norm.item()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("torchscript") / "model.pt")
    script_and_save.main(path)
    return path


@pytest.mark.parametrize(
    "module",
    [fusedloss.nn.MSELoss(), fusedloss.nn.L1Loss(reduction="sum"),
     fusedloss.nn.HuberLoss(delta=0.3), fusedloss.nn.SmoothL1Loss(beta=0.0)],
    ids=lambda m: type(m).__name__,
)
def test_modules_script(module):
    scripted = torch.jit.script(module)
    x, y = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(scripted(x, y), module(x, y))


def test_functional_scripts_with_broadcast_warning():
    @torch.jit.script
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fusedloss.functional.smooth_l1_loss(x, y, beta=0.5)

    x, y = torch.randn(4, 3), torch.randn(3)
    with pytest.warns(UserWarning, match="different to the input size"):
        torch.testing.assert_close(loss(x, y), fusedloss.functional.smooth_l1_loss(x, y, beta=0.5))


def test_saved_module_runs_in_fresh_python_process(saved_model):
    program = (
        "import sys, torch, fusedloss\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import script_and_save\n"
        "m = torch.jit.load(sys.argv[1])\n"
        "x, y = script_and_save.example_inputs()\n"
        "loss = m(x, y); loss.backward()\n"
        "norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in m.parameters()))\n"
        "print('loss', repr(loss.item())); print('grad_norm', repr(norm.item()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program, saved_model, os.path.join(ROOT, "examples", "torchscript")],
        capture_output=True, text=True, check=True,
    )
    expected = eager_report(torch.jit.load(saved_model))
    assert parse_report(out.stdout) == pytest.approx(expected, rel=1e-6)


@needs_cpp_examples
def test_saved_module_runs_in_cpp(saved_model):
    binary = os.path.join(EXAMPLES_BUILD, "torchscript", "load_scripted")
    out = subprocess.run([binary, saved_model], capture_output=True, text=True, check=True)
    expected = eager_report(torch.jit.load(saved_model))
    assert parse_report(out.stdout) == pytest.approx(expected, rel=1e-5)


@needs_cpp_examples
def test_cpp_trainer_built_with_find_package_runs():
    binary = os.path.join(EXAMPLES_BUILD, "cpp", "train")
    out = subprocess.run([binary], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the runs agree" in out.stdout


def test_python_examples_run(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (tools/install_deps.sh installs it)")
    pytest.importorskip("tqdm", reason="tqdm not installed (tools/install_deps.sh installs it)")
    examples = os.path.join(ROOT, "examples", "python")
    out = subprocess.run([sys.executable, os.path.join(examples, "regression_demo.py"), "--epochs", "20"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "the two runs agree" in out.stdout, out.stdout + out.stderr
    plot = tmp_path / "fits.png"
    out = subprocess.run([sys.executable, os.path.join(examples, "regression_outliers.py"),
                          "--steps", "300", "--out", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert plot.stat().st_size > 10_000
    # L1 and Huber stay near the true slope (1.5) despite the outliers; MSE is pulled away.
    slopes = {line.split(":")[0].strip(): float(line.split("slope ")[1].split(",")[0])
              for line in out.stdout.splitlines() if "slope" in line and "true" not in line}
    assert abs(slopes["L1Loss"] - 1.5) < abs(slopes["MSELoss"] - 1.5)
    assert abs(slopes["HuberLoss"] - 1.5) < abs(slopes["MSELoss"] - 1.5)
    # CTC: a short run still learns (the README's figures are from the default 300 steps).
    plot = tmp_path / "ctc.png"
    out = subprocess.run([sys.executable, os.path.join(examples, "ctc_recognizer.py"),
                          "--steps", "80", "--out", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert plot.stat().st_size > 10_000
    line = next(line for line in out.stdout.splitlines() if line.startswith("loss: first step "))
    first, last = (float(v) for v in line[len("loss: first step "):].split(", last 20 steps "))
    assert last < first / 2


def test_grpo_example_learns_to_count(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (tools/install_deps.sh installs it)")
    pytest.importorskip("tqdm", reason="tqdm not installed (tools/install_deps.sh installs it)")
    # A short run (the README's figures are from the default 150 steps): the reward of a random
    # policy is about 1/16; after 40 GRPO steps it is several times that.
    plot = tmp_path / "grpo.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", "grpo_tiny_lm.py"),
                          "--steps", "40", "--out", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert plot.stat().st_size > 10_000
    line = next(line for line in out.stdout.splitlines() if line.startswith("mean reward: first 10 steps "))
    first, last = (float(v) for v in line[len("mean reward: first 10 steps "):].split(", last 10 steps "))
    assert first < 0.2 and last > first + 0.25


def test_multiclass_example_runs_and_smoothing_curbs_overconfidence(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (tools/install_deps.sh installs it)")
    pytest.importorskip("tqdm", reason="tqdm not installed (tools/install_deps.sh installs it)")
    plot = tmp_path / "maps.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", "multiclass_label_smoothing.py"),
                          "--epochs", "60", "--out", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert plot.stat().st_size > 10_000
    runs = {}
    for line in out.stdout.splitlines():
        if line.startswith("label_smoothing="):
            name, rest = line.split(":", 1)
            runs[name] = {k.strip().rsplit(" ", 1)[0]: float(k.strip().rsplit(" ", 1)[1]) for k in rest.split(",")}
    plain, smoothed = runs["label_smoothing=0.0"], runs["label_smoothing=0.2"]
    assert smoothed["accuracy"] > 0.7 and plain["accuracy"] > 0.7
    assert smoothed["mean confidence when wrong"] < plain["mean confidence when wrong"]


def test_imbalanced_example_shows_why_accuracy_misleads(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed (tools/install_deps.sh installs it)")
    pytest.importorskip("tqdm", reason="tqdm not installed (tools/install_deps.sh installs it)")
    plot = tmp_path / "bars.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", "imbalanced_metrics.py"),
                          "--epochs", "3", "--out", str(plot)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert plot.stat().st_size > 10_000
    reports = {}
    for line in out.stdout.splitlines():
        name, _, rest = line.rpartition(": ")
        if "accuracy" in rest:
            reports[name.split("\r")[-1]] = {k.split()[0]: float(k.split()[1]) for k in rest.split(", ")}
    never = reports['always "negative"']
    assert never["accuracy"] > 0.98 and never["recall"] == 0.0 and never["f1"] == 0.0
    assert reports["BCEWithLogitsLoss(pos_weight=99)"]["recall"] > reports["BCELoss"]["recall"]
