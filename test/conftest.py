"""Suite-wide test settings.

Tests run on small tensors where thread start-up dominates: one intra-op thread is faster and far more
stable on the 2-core CI machines (and keeps DDS child processes from starving). Benchmarks set their own.
"""

import os

import pytest

os.environ.setdefault("ONLINE3R_NO_PROGRESS", "1")

try:
    import torch
except ImportError:  # the ROS-layer tests run without torch
    torch = None


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    if torch is not None:
        torch.set_num_threads(1)
    yield
