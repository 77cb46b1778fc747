"""Freed heap memory goes back to the OS (glibc)."""

from __future__ import annotations

import os
import sys

import pytest

from online3r_ros.utils.heap import release_free_heap
from online3r_ros.utils.proc_memory import rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim, /proc RSS: Linux")
def test_freed_fragmented_heap_is_returned_to_the_os() -> None:
    """64 KiB blocks (below glibc's mmap threshold, so they live in the heap) with every tenth kept, as an
    optimisation's freed temporaries between live data: the trim gives the free pages back."""
    blocks = [bytearray(os.urandom(16)) * 4096 for _ in range(3000)]  # ~190 MB, touched
    kept = blocks[::10]
    del blocks
    before = rss_mb(os.getpid())
    assert release_free_heap()
    after = rss_mb(os.getpid())
    assert before - after > 100, (before, after)
    assert len(kept) == 300
