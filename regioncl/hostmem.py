"""Keep freed host memory in the process, so that training on the CPU stops page-faulting.

glibc's malloc hands large freed blocks back to the kernel: a block above the mmap
threshold is unmapped when freed, and the top of the heap is trimmed once more than the
trim threshold lies free there. A training step frees its activations and allocates them
again the next step, so on the CPU every step faults its activation memory in anew and the
kernel zeroes it page by page: about 100,000 minor faults (400 MB) per step for resnet50 at
128 px, batch 16, measured with ``minor_page_faults`` around the step (BENCHMARKS.md).

``keep_freed_host_memory`` sets both thresholds once (``mallopt``): blocks come from the
heap and stay there after ``free``, ready for the next step. It is the in-process
counterpart of the allocator settings PyTorch's CPU launcher (``torch.backends.xeon.run_cpu``)
preloads jemalloc or tcmalloc with. The cost: the process keeps its peak heap for its
lifetime instead of shrinking between steps, which a training process reaches every
step anyway.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap (the int ``mallopt`` takes; glibc before 2.35
# refuses more than 32 MiB on 64-bit, the fallback).
_MMAP_THRESHOLDS = (2**31 - 1, 32 << 20)

_applied: bool | None = None


def keep_freed_host_memory() -> bool:
    """Stop glibc returning freed memory to the kernel (no trimming; large blocks from the heap).

    Returns whether the setting is in force: False where the C library is not glibc (or an
    allocator preloaded in its place ignores ``mallopt``: jemalloc and tcmalloc keep memory
    by their own settings). Process-wide and for the rest of the process; idempotent.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.info("not glibc: host memory left to the C library's allocator")
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not any(mallopt(M_MMAP_THRESHOLD, t) for t in _MMAP_THRESHOLDS):
        return False
    _applied = bool(mallopt(M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))
    return _applied


def minor_page_faults() -> int:
    """Minor page faults of this process so far (all threads); 0 where not reported."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
