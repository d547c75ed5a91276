"""Index arithmetic past 2**31 elements (64-bit everywhere): one loss over a bfloat16 tensor of
2**31 + 1027 elements, about 13 GB with target and gradient. Skipped where memory is short."""

import os

import pytest
import torch

import fusedloss

N = (1 << 31) + 1027
NEEDED_BYTES = 3 * N * 2 + (2 << 30)  # input, target, gradient in bfloat16, and headroom


def available_bytes():
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


@pytest.mark.skipif(available_bytes() < NEEDED_BYTES,
                    reason=f"needs {NEEDED_BYTES / 2**30:.0f} GiB of free memory for a tensor past 2**31 elements")
@pytest.mark.skipif(os.environ.get("FUSEDLOSS_SKIP_HUGE") == "1",
                    reason="FUSEDLOSS_SKIP_HUGE=1 (the sanitizer run: ASan's allocator would double the memory)")
def test_huge_tensor_past_2_to_the_31():
    x = torch.full((N,), 0.5, dtype=torch.bfloat16)
    x[-1] = 2.5  # an element past 2**31 that differs from the rest
    y = torch.zeros(N, dtype=torch.bfloat16)
    x.requires_grad_()
    loss = fusedloss.functional.l1_loss(x, y, reduction="sum")
    # Exact in the float64 sum: 0.5 * (N - 1) + 2.5, then rounded once to bfloat16.
    assert loss.item() == torch.tensor(0.5 * (N - 1) + 2.5, dtype=torch.bfloat16).item()
    loss.backward()
    assert x.grad[-1].item() == 1.0 and x.grad[0].item() == 1.0 and x.grad[1 << 31].item() == 1.0
    del x, y, loss
