"""Shared fixtures: small datasets made once per session, a private HOME, fixed threads."""

from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _sigint_left_as_found(request):
    """Every test leaves Ctrl-C's handler as it found it; one that changed it is named in a warning.
    A SIGINT left ignored in a test process is inherited by every child it starts after (through
    exec), whose Ctrl-C then does nothing. In CI the Ctrl-C tests of two modules saw their children
    finish with exit 0 so, yet no test left SIG_IGN as Python sees it: those tests start their
    children with SIGINT at its default themselves, and this guard names any test that does change it."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        warnings.warn(f"{request.node.nodeid} left SIGINT's handler at {after!r}; put back")


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory):
    # packages that write config into HOME (deepxde, dask-jobqueue) must not touch the user's
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    yield
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture
def one_thread():
    """Tests of tiny models: a second torch thread only adds synchronisation latency, which on a
    loaded 2-core machine made single forwards up to 50x slower (17 ms vs 1.2 s measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def darcy16(tmp_path_factory):
    """24 Darcy samples at 16x16 (train file) and 8 more with another seed (test file)."""
    from sciml import datasets

    d = tmp_path_factory.mktemp("darcy16")
    train = datasets.generate("darcy", n=24, resolution=16, seed=0, out=d / "train.h5", progress=False)
    test = datasets.generate("darcy", n=8, resolution=16, seed=1, out=d / "test.h5", progress=False)
    return train, test
