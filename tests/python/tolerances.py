"""Tolerances against the torch oracle, per dtype; the one place they are set. Also the
bitwise-determinism check the test files share.

float32/float64: summation order differs (we add in fixed chunks, widening to float64), so the
reduced values agree to rounding. float16/bfloat16: both compute in float32, but torch rounds the
per-element loss to the input dtype before a 'mean'/'sum' and we do not, and our gradient is the
saved half-precision derivative times the scale (two roundings against torch's one): a few ulps.
"""

import torch

TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=4e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=2e-2),
}

DTYPES = list(TOLERANCES)

# linear_cross_entropy against the float64 unfused path: in half precision the matmul rounds the
# logits to the dtype (as F.linear does) and accumulates in another order, so the error is
# measured against the largest value of each compared tensor.
SCALED_TOLERANCES = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def assert_close_scaled(actual, expected, dtype, what="", floor=1e-3):
    """|actual - expected| within the dtype's share of max|expected|, or of `floor` when larger:
    the size of the terms a result is summed from, where they cancel (a bias gradient sums
    d(loss)/d(logit) over rows: terms of 1/n each that nearly cancel)."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    diff = (actual.double() - expected).abs().max().item() if expected.numel() else 0.0
    assert diff <= SCALED_TOLERANCES[dtype] * max(scale, floor), f"{what}: max diff {diff} vs scale {scale}"


def assert_close(actual, expected, dtype=None, msg=""):
    tolerance = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=msg or None, **tolerance)


def assert_bitwise_deterministic(loss_fn, x):
    """loss_fn(x) and its input gradient are bitwise equal run after run, at 1 and 2 threads
    (CPU: fixed chunks summed in order; CUDA: no float atomics)."""
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_()
            loss = loss_fn(xg)
            loss.backward()
            results.append((loss, xg.grad))
    finally:
        torch.set_num_threads(threads)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def assert_close_lattice(actual, expected, dtype, magnitude):
    """A log-space dynamic program (CTC) loses about eps * |log-likelihood| in every posterior it
    exponentiates: torch's own float32 CTC gradient differs from its float64 one by 2e-5 at
    losses of 60. The dtype's tolerance plus 8 eps of the computing dtype (float32 for the half
    types) times `magnitude`, the largest per-sample loss."""
    tolerance = dict(TOLERANCES[dtype])
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    tolerance["atol"] += 8 * eps * magnitude
    torch.testing.assert_close(actual, expected, equal_nan=True, **tolerance)
