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
    # Zero everywhere but two elements past 2**31: the sum (3) is exact only if both are read at
    # their own index, and their gradients (sign of the error) land only there.
    x = torch.zeros(N, dtype=torch.bfloat16)
    x[1 << 31] = 1.0
    x[-1] = 2.0
    y = torch.zeros(N, dtype=torch.bfloat16)
    x.requires_grad_()
    loss = fusedloss.functional.l1_loss(x, y, reduction="sum")
    assert loss.item() == 3.0
    loss.backward()
    assert x.grad[1 << 31].item() == 1.0 and x.grad[-1].item() == 1.0
    assert x.grad.sum().item() == 2.0  # and nowhere else
    del x, y, loss


ROWS, CLASSES = 16385, 1 << 17  # 2**31 + 2**17 logits
CE_NEEDED_BYTES = 2 * ROWS * CLASSES * 2 + (3 << 30)  # logits and gradient in bfloat16, headroom


@pytest.mark.skipif(available_bytes() < CE_NEEDED_BYTES,
                    reason=f"needs {CE_NEEDED_BYTES / 2**30:.0f} GiB of free memory for logits past 2**31 elements")
@pytest.mark.skipif(os.environ.get("FUSEDLOSS_SKIP_HUGE") == "1",
                    reason="FUSEDLOSS_SKIP_HUGE=1 (the sanitizer run: ASan's allocator would double the memory)")
def test_cross_entropy_logits_past_2_to_the_31():
    # All rows uniform (loss log C) except the last, past element 2**31, which is certain of its
    # target: only a 64-bit row offset reads and writes that row where it lies.
    x = torch.zeros(ROWS, CLASSES, dtype=torch.bfloat16)
    x[-1, 5] = 100.0
    target = torch.full((ROWS,), 5, dtype=torch.long)
    x.requires_grad_()
    loss = fusedloss.functional.cross_entropy(x, target, reduction="none")
    expected = torch.full((ROWS,), float(torch.log(torch.tensor(float(CLASSES)))))
    expected[-1] = 0.0
    torch.testing.assert_close(loss.float(), expected, rtol=1e-2, atol=1e-3)
    loss.sum().backward()
    assert x.grad[-1].abs().max().item() < 1e-30 and x.grad[0, 5].item() < -0.99
    del x, loss
