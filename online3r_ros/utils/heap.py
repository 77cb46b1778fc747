"""Give freed heap memory back to the operating system (glibc ``malloc_trim``).

A global optimisation allocates large temporaries (residuals, Jacobians, blocked Hessian products) and frees
them; glibc keeps the freed pages in its arenas, fragmented, so a long-running mapper's resident memory grew
about three times faster than the map it holds. Trimming after each optimisation returns them: in process
(tracker + mapper, a 64x48 synthetic orbit, ``local_opt.window`` 20) RSS after 1,500 frames was 397 MB with
the trim and 561 MB without; the growth from frame 300 to 1,500 was 63 MB instead of 173 MB. It costs
about 2 ms per call.

The tracker node trims after each frame: full-size images (2.7 MB colour + 1.8 MB depth at 1280x720) and
their conversions are freed every frame, and once glibc's dynamic mmap threshold has risen above their size
they come from the fragmented heap. 30 s of 1280x720 RGB-D at 30 Hz (``bench_camera_stream.py --tracker``,
one core free): tracker RSS +275 MiB per 1,000 frames without, +75 with the trim after each frame; a fixed
1 MiB mmap threshold (``MALLOC_MMAP_THRESHOLD_=1048576``) gave +21, at the cost of page faults on every
large allocation (not measured apart from the noise of that machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library, or not Linux)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; ``True`` when glibc released any, ``False`` otherwise (also
    where there is no ``malloc_trim``: nothing to do there)."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
