import os
import sys
import tempfile

# A fresh torch.compile cache per run: a cached graph of an earlier build of the library could
# call its internal ops with their old signatures.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="fusedloss_inductor_"))

import pytest  # noqa: E402
import torch  # noqa: E402

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
