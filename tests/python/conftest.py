import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import fusedloss  # noqa: E402,F401  (registers torch.ops.fusedloss)

CUDA_SKIP_REASON = "no CUDA device on this machine (CUDA kernels are compiled, not run, here)"

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param
