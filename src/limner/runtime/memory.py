"""Memory of this process and of the machine, from Linux's /proc (None elsewhere), and
the C allocator's setting for fp16 weight storage."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

# Below this much available memory, the text encoders are freed once a prompt is
# encoded (SD 1.x: 0.25 GB in bf16, SDXL: 1.6 GB) and loaded again for the next one.
TIGHT_BYTES = 2 * 1024**3


# glibc's mallopt parameter: blocks at least this large are mmapped and handed back to
# the system when freed (malloc.h: M_MMAP_THRESHOLD).
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 1024**2


def return_large_blocks_to_the_system(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve allocations of at least `threshold` bytes from mmap, so that each goes back
    to the system when freed; False where this is not glibc.

    Why: with fp16 weight storage every layer allocates fp32 copies of its weights at each
    call and frees them after. glibc's default threshold grows to 32 MiB as such blocks
    are freed, after which they come from the heap, whose freed holes are mostly not
    returned: in 512x512 SD1.5 generations this churn raised the resident peak from 3.57 to
    4.66 GB by the second image, at the same speed. A fixed threshold also switches off
    that growth."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))  # musl's does nothing and says 0


def available_bytes() -> int | None:
    """MemAvailable: what can be allocated without swapping (None where unknown)."""
    return _read_kib("/proc/meminfo", "MemAvailable")


def memory_is_tight(threshold: int = TIGHT_BYTES) -> bool:
    available = available_bytes()
    return available is not None and available < threshold


def peak_rss_bytes() -> int | None:
    """The process's resident-set high-water mark (VmHWM)."""
    return _read_kib("/proc/self/status", "VmHWM")


def rss_bytes() -> int | None:
    return _read_kib("/proc/self/status", "VmRSS")


def reset_peak_rss() -> bool:
    """Start the high-water mark again from the current RSS (Linux >= 4.0); False where
    that is not possible, and then `peak_rss_bytes` counts from the process start."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _read_kib(path: str, field: str) -> int | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None
