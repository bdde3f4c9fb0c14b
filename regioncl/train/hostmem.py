"""Keep freed host memory in the process, so that training on the CPU stops page-faulting.

glibc's malloc hands freed memory back to the kernel: a block above the mmap threshold
(which adjusts itself up to 32 MiB) is unmapped when freed, and the top of the heap is
trimmed once more than the trim threshold lies free there. A training step frees its
activations and allocates them again the next step, so on the CPU every step faults much
of its activation memory in anew and the kernel zeroes it page by page: 83,000–119,000
minor faults (about 400 MB) per step for resnet50 at 128 px, batch 16 (BENCHMARKS.md).

``keep_freed_host_memory`` sets both thresholds once (``mallopt``): blocks up to 2 GiB come
from the heap (32 MiB where an older glibc refuses more) and stay there after ``free``, ready
for the next step. It is the in-process counterpart of the allocator settings PyTorch's CPU
launcher (``torch.backends.xeon.run_cpu``) preloads jemalloc or tcmalloc with. Limits: it
acts on the main thread's heap (other threads allocate from arenas of at most 64 MiB, whose
larger blocks are still mapped and unmapped); it is process-wide and for the rest of the
process, so what the process frees is kept for reuse, not only a step's activations (hence
:func:`release_freed_host_memory` after evaluations); DataLoader workers started by ``fork``
inherit it, workers started by ``spawn`` or ``forkserver`` do not.
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap: the largest int ``mallopt`` takes, or glibc's
# old cap (HEAP_MAX_SIZE / 2 on 64-bit), which older versions enforce.
_MMAP_THRESHOLDS = (2**31 - 1, 32 << 20)

_kept: int | None = None  # the block size limit in force; 0: not applied


def _libc() -> ctypes.CDLL | None:
    """The process's C library, where it is glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def keep_freed_host_memory() -> int:
    """Stop glibc returning freed memory to the kernel (no trimming; large blocks from the heap).

    Returns the largest block size, in bytes, that is now kept (0: nothing applied, where
    the C library is not glibc). Where an allocator is preloaded in glibc's place (jemalloc,
    tcmalloc) this still reports glibc's setting, which that allocator ignores: those keep
    memory by their own settings. Process-wide and for the rest of the process; idempotent.
    """
    global _kept
    if _kept is not None:
        return _kept
    _kept = 0
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        logger.info("not glibc: host memory left to the C library's allocator")
        return 0
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    limit = next((t for t in _MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, t)), 0)
    if limit and mallopt(M_TRIM_THRESHOLD, -1):  # -1: never trim (mallopt(3))
        _kept = limit
    return _kept


def keep_host_memory_for(setting: bool | None, device_type: str) -> int:
    """The trainer's rule: keep freed host memory when ``setting`` is True, or when it is None
    and the steps run on the CPU (``device_type``); returns :func:`keep_freed_host_memory`'s
    limit, 0 where not applied. Logs the outcome, a warning where asked for and impossible."""
    if not (setting or (setting is None and device_type == "cpu")):
        return 0
    kept = keep_freed_host_memory()
    if kept:
        logger.info("freed host memory kept between steps (blocks up to %d MiB)", kept >> 20)
    else:
        (logger.warning if setting else logger.info)("freed host memory cannot be kept: the C library is not glibc")
    return kept


def release_freed_host_memory() -> None:
    """Hand the memory kept free back to the kernel once (``malloc_trim``): after a one-off
    peak such as an evaluation, so that it is not held for the rest of the run. The next
    training step faults its memory in once and keeps it again. No-op where nothing is kept."""
    libc = _libc() if _kept else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
        libc.malloc_trim(0)


def minor_page_faults() -> int:
    """Minor page faults of this process so far (all threads); 0 where not reported."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
