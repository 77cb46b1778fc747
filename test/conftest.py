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


def _reserved_domain():
    from online3r_ros.ros.replay.domain import reserve_domain_id

    with reserve_domain_id() as lease:  # a DDS domain id no other process on this machine holds
        yield lease.domain_id


@pytest.fixture
def dds_domain():
    """A DDS domain id reserved for this test (no cross-talk with concurrent suites or nodes)."""
    yield from _reserved_domain()


@pytest.fixture(scope="module")
def dds_domain_module():
    """A DDS domain id reserved for one test module."""
    yield from _reserved_domain()
