"""Shared fixtures: paths to ../shared/data (skipped with a reason when absent) and temp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REENACT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ../shared/data; tests using it skip when a user's clone has no shared/ beside it."""
    if not (SHARED / "README.md").exists():
        pytest.skip(f"needs the shared face data at {SHARED} (absent in a user's clone)")
    return SHARED


@pytest.fixture(scope="session")
def assets() -> Path:
    """Tiny committed test assets (provenance in tests/assets/PROVENANCE.md)."""
    return REPO / "tests" / "assets"


@pytest.fixture
def one_thread():
    """Run torch on one intra-op thread (2 threads on a busy 2-core machine are ~10× slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
