"""Checks of errors that CUDA reports late: fusedloss records a bad value on the device and raises
it at the next call or at fusedloss.check_errors(); the CPU raises at once. raises() accepts both."""

import contextlib

import pytest

import fusedloss


@contextlib.contextmanager
def raises(exception, match):
    """pytest.raises for an error the body's fusedloss calls detect, wherever they raise it."""
    with pytest.raises(exception, match=match):
        yield
        fusedloss.check_errors()
