"""The GPU benchmark (lent H200): fusedloss vs torch eager vs torch.compile, forward+backward, in
one run, against dst.copy_(src) of the same size measured in the run.

    python benchmarks/bench_gpu.py [--quick] [--only cross_entropy|linear|...|post_training]...
                                   [--budget-seconds 420]

Sections: cross entropy (3 shapes, bf16 and fp32), linear cross entropy (N=8192, H=4096,
V=128256), the first steps of fresh processes, the pointwise losses (64M, 16M), CTC (two shapes), the RL head
(log-probs + entropy, N=4096, H=2048, V=128256, bf16). A failing section
prints its error and the others run; what the budget does not allow is skipped with a note.
Writes benchmarks/results/gpu_<section>.md/.csv and a summary table last (gpu_summary.md).
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

_T0 = time.perf_counter()
import torch  # noqa: E402

_TORCH_IMPORT_S = time.perf_counter() - _T0
import torch.nn.functional as F  # noqa: E402
from common import (MiB, Budget, copy_bytes_per_second, field, free,  # noqa: E402
                    machine_description, measure_steps, ms, peak_mib, ratio, short, synchronize,
                    write_results)

SECTIONS = ["cross_entropy", "linear", "first_steps", "pointwise", "ctc", "post_training"]  # run in this order
FUSED, EAGER, COMPILE = "fusedloss", "torch eager", "torch.compile"
three = (FUSED, EAGER, COMPILE)
compiled = functools.partial(torch.compile, dynamic=False)  # a graph per shape and dtype


def side_by_side(res, minimal, copy_bps):
    """The columns shared by cross entropy and pointwise; minimal: the bytes a fused pass moves."""
    return {"fusedloss ms": ms(res, FUSED), "torch eager ms": ms(res, EAGER),
            "torch.compile ms": ms(res, COMPILE), "vs eager": ratio(res, EAGER, FUSED),
            "vs compile": ratio(res, COMPILE, FUSED),
            "fusedloss GB/s": field(res, FUSED, lambda r: f"{minimal / r['s'] / 1e9:.0f}"),
            "of copy": field(res, FUSED, lambda r: f"{minimal / r['s'] / copy_bps:.0%}"),
            "copy GB/s": f"{copy_bps / 1e9:.0f}"}


def section_cross_entropy(args, budget, FL, summary):
    """Minimal bytes: read the logits once, write their gradient once, read the int64 targets;
    time-equivalent B/logit: step time x copy GB/s / logits. Peak: max_memory_allocated during a
    step minus what was allocated before it (the inputs)."""
    shapes = ([(64, 1000), (32, 4096)] if args.smoke
              else [(4096, 32000), (8192, 128256), (2048, 262144)])
    variants = {FUSED: FL.cross_entropy} if FL else {}
    variants.update({EAGER: F.cross_entropy, COMPILE: compiled(F.cross_entropy)})
    for (n, c), dtype in [(s, d) for s in shapes for d in (torch.bfloat16, torch.float32)]:
        case = f"({n}, {c}) {str(dtype)[6:]}"
        if not budget.allows(25, f"cross entropy {case}"):
            return
        torch.manual_seed(0)
        logits = (torch.randn(n, c, device=args.device, dtype=dtype) * 2).requires_grad_()
        target = torch.randint(c, (n,), device=args.device)
        target[::17] = -100  # padded batches
        copy_bps = copy_bytes_per_second(n * c, dtype, args.device, args.repeats)
        res = measure_steps(variants, [logits], lambda fn: fn(logits, target), *args.timing)
        minimal = 2 * logits.nbytes + target.nbytes
        row = {"case": case, **side_by_side(res, minimal, copy_bps),
               "minimal B/logit": f"{minimal / (n * c):.2f}",
               "time-equivalent B/logit (fused / eager / compile)": " / ".join(
                   field(res, k, lambda r: f"{r['s'] * copy_bps / (n * c):.1f}") for k in three),
               "peak MiB above inputs (fused / eager / compile)": " / ".join(
                   field(res, k, peak_mib) for k in three),
               "logits MiB": f"{logits.nbytes / MiB:.0f}",
               "loss (fused / eager / compile)": " / ".join(
                   field(res, k, lambda r: f"{r['loss']:.4f}") for k in three)}
        summary.append(("cross entropy", case, "fused / eager / compile " + " / ".join(
            ms(res, k) for k in three) + f" ms; fused {row['of copy']} of copy"))
        yield row
        del logits, target, res
        free(args.device)


def chunked_linear_cross_entropy(x, w, t, chunk=1024, ignore_index=-100):
    """Plain torch ops: logits of `chunk` rows at a time in x's dtype, cross entropy in fp32."""
    total = x.new_zeros((), dtype=torch.float32)
    for i in range(0, x.shape[0], chunk):
        total = total + F.cross_entropy((x[i:i + chunk] @ w.T).float(), t[i:i + chunk],
                                        reduction="sum", ignore_index=ignore_index)
    return total / (t != ignore_index).sum()


def section_linear(args, budget, FL, summary):
    """bfloat16. Peak as for cross entropy; the next column subtracts the gradients of x and W,
    which every method produces."""
    (n, h, v), chunk = ((256, 64, 1000), 64) if args.smoke else ((8192, 4096, 128256), 1024)
    if not budget.allows(60, "linear cross entropy"):
        return
    torch.manual_seed(0)
    x = torch.randn(n, h, device=args.device, dtype=torch.bfloat16).requires_grad_()
    w = (torch.randn(v, h, device=args.device, dtype=torch.bfloat16) / h ** 0.5).requires_grad_()
    t = torch.randint(v, (n,), device=args.device)
    t[::17] = -100
    chunked = compiled(lambda x, w, t: chunked_linear_cross_entropy(x, w, t, chunk))
    variants = {"fusedloss.linear_cross_entropy": lambda: FL.linear_cross_entropy(x, w, t)} \
        if FL else {}
    variants.update({  # the first unfused one is bench_linear_cross_entropy.py's reference
        "torch unfused F.cross_entropy(F.linear(x, w), t)": lambda: F.cross_entropy(
            F.linear(x, w), t),
        "torch unfused, logits .float()": lambda: F.cross_entropy(F.linear(x, w).float(), t),
        f"torch.compile chunked loop ({chunk} rows)": lambda: chunked(x, w, t)})
    if hasattr(F, "linear_cross_entropy"):
        options = torch.nn.LinearCrossEntropyOptions()
        variants["torch F.linear_cross_entropy"] = lambda: F.linear_cross_entropy(
            x, w, t, options=options)
    res = measure_steps(variants, [x, w], lambda fn: fn(), *args.timing)
    grads = x.nbytes + w.nbytes  # the gradients every method must produce
    for name in variants:
        row = {"method": name, "ms per step": ms(res, name),
               "time vs first row": ratio(res, name, next(iter(variants))),
               "peak MiB above inputs": field(res, name, peak_mib),
               "above inputs and gradients MiB": field(res, name, lambda r: peak_mib(r, grads)),
               "loss": field(res, name, lambda r: f"{r['loss']:.5f}")}
        summary.append(("linear CE", name, f"{row['ms per step']} ms, peak "
                        f"{row['peak MiB above inputs']} MiB above inputs"))
        yield row


def first_steps_child(variant, device, smoke):
    """In a fresh process: the seconds of each phase, printed as one JSON line."""
    (n, c), start = ((64, 1000) if smoke else (4096, 32000)), time.perf_counter()
    phases = {"import torch s": _TORCH_IMPORT_S}
    logits = (torch.randn(n, c, device=device, dtype=torch.bfloat16) * 2).requires_grad_()
    target = torch.randint(c, (n,), device=device)
    target[::17] = -100
    synchronize(device)
    phases["CUDA init + inputs s"], start = time.perf_counter() - start, time.perf_counter()
    fn = {EAGER: lambda: F.cross_entropy, COMPILE: lambda: compiled(F.cross_entropy),
          FUSED: lambda: __import__("fusedloss").functional.cross_entropy}[variant]()
    phases["library load s"] = time.perf_counter() - start
    for i in (1, 2, 3):
        start, logits.grad = time.perf_counter(), None
        fn(logits, target).backward()
        synchronize(device)
        phases[f"call {i} ms"] = (time.perf_counter() - start) * 1e3
    print("FIRST_STEPS " + json.dumps(phases), flush=True)


def section_first_steps(args, budget, FL, summary):
    """Each variant in a fresh process with empty Inductor/Triton caches; load: import fusedloss,
    or the torch.compile() call; call 1 of torch.compile includes compiling."""
    for variant in three:
        if not budget.allows(30, f"first steps of {variant}"):
            return
        try:
            with tempfile.TemporaryDirectory() as cache:  # cold compile caches, as a first run
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache,
                           TRITON_CACHE_DIR=os.path.join(cache, "triton"))
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--device", args.device,
                     "--first-steps-child", variant] + ["--smoke"] * args.smoke, env=env,
                    capture_output=True, text=True,
                    timeout=max(10, min(240, budget.left())))
                wall = time.perf_counter() - start
            lines = [s for s in done.stdout.splitlines() if s.startswith("FIRST_STEPS ")]
            if done.returncode or not lines:
                raise RuntimeError(f"child rc={done.returncode}: {done.stderr.strip()[-600:]}")
        except Exception as error:  # the other variants still run
            summary.append(("first steps", variant, short(error)))
            print(*summary[-1], flush=True)
            continue
        phases = json.loads(lines[-1].split(" ", 1)[1])
        calls_s = sum(phases[f"call {i} ms"] for i in (1, 2, 3)) / 1e3
        row = {"variant": variant, **{k: f"{v:.2f}" for k, v in phases.items()},
               "load + 3 calls s": f"{phases['library load s'] + calls_s:.2f}",
               "child process wall s": f"{wall:.2f}"}
        summary.append(("first steps", variant, "calls 1/2/3: " + " / ".join(
            row[f"call {i} ms"] for i in (1, 2, 3)) + f" ms, load {row['library load s']} s"))
        yield row


def section_pointwise(args, budget, FL, summary):
    """Minimal bytes: read input and target (and pos_weight), write the gradient."""
    from bench_pointwise import LOSSES  # imports fusedloss: this section needs the library
    for size in (1, 0.25) if args.smoke else (64, 16):
        n = int(size * 2 ** 20)
        copy_bps = copy_bytes_per_second(n, torch.float32, args.device, args.repeats)
        shares, faster = [], 0  # fusedloss's share of copy; losses where it beats both
        for name, (ours, ref, make_inputs) in LOSSES.items():
            if not budget.allows(15, f"pointwise {name} at {size}M"):
                break
            x, y, options = make_inputs(n, args.device)
            x.requires_grad_()
            minimal = 2 * x.nbytes + y.nbytes + sum(o.nbytes for o in options.values())
            res = measure_steps({FUSED: ours, EAGER: ref, COMPILE: compiled(ref)}, [x],
                                lambda fn: fn(x, y, **options), *args.timing, peak=False)
            if isinstance(res[FUSED], dict):
                shares.append(minimal / res[FUSED]["s"] / copy_bps)
                faster += all(res[FUSED]["s"] < r["s"] for k, r in res.items()
                              if k != FUSED and isinstance(r, dict))
            yield {"loss": name, "elements": f"{size}M", **side_by_side(res, minimal, copy_bps),
                   "minimal bytes": f"{minimal:,}"}
            del x, y, options
            free(args.device)
        if shares:
            summary.append(("pointwise", f"{size}M float32", f"fusedloss {min(shares):.0%}-"
                            f"{max(shares):.0%} of copy; faster than eager and compile in "
                            f"{faster} of {len(shares)} losses"))
        if budget.left() < 15:
            return


def section_ctc(args, budget, FL, summary):
    """float32 log-probabilities (T, N, C) of a log_softmax, padded targets on the device and
    lengths on the host (as data loaders give them), target lengths in [S/2, S], 'mean'. Peak as
    for cross entropy."""
    from bench_ctc import problem
    shapes = [(20, 4, 10, 5)] if args.smoke else [(500, 32, 80, 100), (1000, 16, 5000, 200)]
    variants = {FUSED: FL.ctc_loss} if FL else {}
    variants.update({EAGER: F.ctc_loss, COMPILE: compiled(F.ctc_loss)})
    for shape in shapes:
        case = "T x N x C x S = " + "x".join(map(str, shape))
        if not budget.allows(30, f"ctc {case}"):
            return
        inputs = problem(shape, args.device)
        res = measure_steps(variants, [inputs[0]], lambda fn: fn(*inputs), *args.timing)
        row = {"case": case, "fusedloss ms": ms(res, FUSED), "torch eager ms": ms(res, EAGER),
               "torch.compile ms": ms(res, COMPILE), "vs eager": ratio(res, EAGER, FUSED),
               "vs compile": ratio(res, COMPILE, FUSED),
               "peak MiB above inputs (fused / eager / compile)": " / ".join(
                   field(res, k, peak_mib) for k in three),
               "loss (fused / eager / compile)": " / ".join(
                   field(res, k, lambda r: f"{r['loss']:.4f}") for k in three)}
        summary.append(("ctc", case, "fused / eager / compile " + " / ".join(
            ms(res, k) for k in three) + " ms"))
        yield row
        del inputs, res
        free(args.device)



def section_post_training(args, budget, FL, summary):
    """An RL step's head in bfloat16 (bench_post_training.py): per-token log-probabilities and
    entropy from hidden states and the LM head, fused against torch's unfused path (bf16 logits,
    log_softmax in float32), eager and compiled. Peak as for linear cross entropy."""
    from bench_post_training import fused, problem, unfused
    shape = (256, 64, 1000) if args.smoke else (4096, 2048, 128256)
    if not budget.allows(60, "post-training head"):
        return
    x, w, t, adv = problem(shape, args.device)
    variants = {FUSED: fused} if FL else {}
    variants.update({EAGER: unfused, COMPILE: compiled(unfused)})
    res = measure_steps(variants, [x, w], lambda fn: fn(x, w, t, adv), *args.timing)
    grads = x.nbytes + w.nbytes
    case = "N x H x V = " + "x".join(map(str, shape))
    for name in variants:
        row = {"case": case, "method": name, "ms per step": ms(res, name),
               "vs fusedloss": ratio(res, name, FUSED) if FL else "-",
               "peak MiB above inputs": field(res, name, peak_mib),
               "above inputs and gradients MiB": field(res, name, lambda r: peak_mib(r, grads)),
               "loss": field(res, name, lambda r: f"{r['loss']:.4f}")}
        summary.append(("post-training", name, f"{row['ms per step']} ms, "
                        f"{row['above inputs and gradients MiB']} MiB above inputs and gradients"))
        yield row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="repeatable")
    parser.add_argument("--budget-seconds", type=float, default=420)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke test
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes
    parser.add_argument("--first-steps-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.first_steps_child:
        return first_steps_child(args.first_steps_child, args.device, args.smoke)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device")
    args.repeats = 5 if args.quick else 15
    args.timing = (args.device, args.repeats, 0.01 if args.quick else 0.02)
    budget, summary = Budget(args.budget_seconds), []
    torch._dynamo.config.cache_size_limit = 64  # a graph per shape, dtype and loss
    try:
        FL = __import__("fusedloss").functional
    except Exception as error:  # the torch columns are still measured
        FL = None
        summary.append(("fusedloss", "not loaded", short(error)))
        print(*summary[-1], flush=True)
    where = (f"{machine_description(args.device)}; median of {args.repeats} timed repeats after "
             "a warm-up (compilation excluded); torch.compile(dynamic=False); 'of copy': "
             "fusedloss's minimal bytes per second against dst.copy_(src) of the same size, "
             "measured in this run; every 17th class target is ignore_index.")
    for section in [s for s in SECTIONS if s in (args.only or SECTIONS)]:
        rows, start, run = [], time.perf_counter(), globals()[f"section_{section}"]
        print(f"== {section}", flush=True)
        try:
            for row in run(args, budget, FL, summary):
                rows.append(row)
                print(row, flush=True)
        except Exception as error:
            summary.append((section, "section failed", short(error)))
            print(*summary[-1], flush=True)
        note = " ".join(run.__doc__.split())
        if rows:
            write_results(f"gpu_{section}", rows, list(rows[0]),
                          f"### {section}, forward+backward, {args.device}\n\n{where} {note} "
                          f"Took {time.perf_counter() - start:.0f} s.")
    summary += [("budget", "skipped", note) for note in budget.skipped]
    write_results("gpu_summary", [dict(zip(("section", "case", "result"), s)) for s in summary],
                  ["section", "case", "result"], f"### Summary\n\n{where}")


if __name__ == "__main__":
    main()
