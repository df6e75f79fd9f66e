# -*- test-case-name: tests.test_memory -*-
"""Keep the C allocator's share of the daemon's resident memory small (glibc only; elsewhere a no-op).

Two glibc behaviours inflate a threaded Python service's RSS: every thread that allocates gets its
own malloc arena (the RQ and SQL threads: about 1.5 MB), and the memory a burst of 1 000 jobs
freed stays mapped at the top of the heap. `one_arena` is called before any thread starts
(Python allocates under the GIL, so one arena is not contended); `release` after work that
allocated a lot (a burst of fires, a full refresh) hands the free pages back to the kernel.
bench/bench_burst.py shows the effect on the figure "RSS after the bursts".
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def _glibc():
    """glibc's handle, or None where the C library is another (musl, macOS). The symbols the
    process has loaded already (dlopen(NULL)), not `ctypes.util.find_library`, which runs
    `ldconfig -p` in a subprocess at every start."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def one_arena() -> bool:
    """Make every thread allocate from the main arena; True when glibc took the setting."""
    return _LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, 1) == 1


def release() -> bool:
    """Return the allocator's free memory to the kernel; True when some was returned. It walks the
    heap with the arena locked (1–2 ms after a burst of 1 000, ~10–20 ms on a 200 MB heap), so it
    is called after work of that size, never on the way to a fire."""
    return _LIBC is not None and _LIBC.malloc_trim(0) == 1
