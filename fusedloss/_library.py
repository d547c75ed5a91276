"""Loads libfusedloss.so (the same file C++ programs link) into torch's operator registry."""

import os

import torch

_LIBRARY_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libfusedloss.so")


def _torch_release(version: str) -> str:
    return version.split("+")[0]


def load() -> str:
    """Registers the fusedloss operators (torch.ops.fusedloss.*) once; returns the library path."""
    path = os.environ.get("FUSEDLOSS_LIBRARY", _LIBRARY_PATH)
    if not os.path.exists(path):
        raise ImportError(
            f"fusedloss: the compiled library is missing ({path}). Build it with "
            "'pip install --no-build-isolation .' (or '-e .') from the source tree."
        )
    try:
        torch.ops.load_library(path)
    except OSError as error:
        raise ImportError(
            f"fusedloss: could not load {path} into torch {torch.__version__}: {error}. The library "
            "is tied to the torch it was compiled against; rebuild it with this torch."
        ) from error
    built_against = torch.ops.fusedloss._build_info()[1]
    if _torch_release(built_against) != _torch_release(torch.__version__):
        raise ImportError(
            f"fusedloss was compiled against torch {built_against} but torch {torch.__version__} "
            "is running; rebuild fusedloss with this torch ('pip install --no-build-isolation .')."
        )
    return path
