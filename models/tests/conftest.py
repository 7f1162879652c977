"""Shared fixtures: a tiny synthetic University-1652 written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vimgeo.dataset import make_synthetic_university1652

TINY = {"n_train": 8, "n_test": 6, "n_distractors": 3, "drones_per_id": 4, "size": 64}


@pytest.fixture(scope="session")
def tiny_university(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a synthetic University-1652 in the official layout (``TINY`` sizes, seed 0)."""
    return make_synthetic_university1652(tmp_path_factory.mktemp("u1652"), seed=0, **TINY)


@pytest.fixture(scope="session")
def tiny_sizes() -> dict[str, int]:
    """The sizes ``tiny_university`` was written with."""
    return dict(TINY)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny tensors: a second thread buys nothing there and, on a busy
    2-core machine, makes every op wait for it (10x slower tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
