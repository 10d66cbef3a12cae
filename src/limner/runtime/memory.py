"""Memory of this process and of the machine, from Linux's /proc (None elsewhere)."""

from __future__ import annotations

from pathlib import Path

# Below this much available memory, the text encoders are freed once a prompt is
# encoded (SD 1.x: 0.25 GB in bf16, SDXL: 1.6 GB) and loaded again for the next one.
TIGHT_BYTES = 2 * 1024**3


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
