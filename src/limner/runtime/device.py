"""What this CPU can do, and how limner runs a model on it.

`detect_cpu` reads the instruction-set flags and the core topology; `RuntimeOptions` is the
user's choice (precision, memory layout, threads, step caching, compilation), and
`resolve_runtime` turns the two into concrete settings: bf16 where it is faster than fp32
on this CPU, fp32 elsewhere, one thread per physical core.

Where bf16 is faster: with AMX-BF16 tiles always; without any bf16 dot-product units never
(bf16 then runs on emulated conversions). With AVX512-BF16 alone it depends on the part:
on an AMD EPYC (Zen 4) bf16 products ran 2x faster than fp32 (56 vs 27 GFLOP/s, one
core), on an Intel Xeon that exposes AVX512-BF16 but not AMX 0.55x as fast (0.14 vs 0.26
TFLOP/s, two cores), and the built-in model followed (1.1-1.4 s per image in bf16 against
1.0 s in fp32 there). So for that case "auto" measures the two rates once
(`bf16_speedup`, about 0.4 s measured on that Xeon) and keeps the answer in the cache folder,
keyed by CPU, flags, torch version and thread count.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path

import torch

from limner.errors import InvalidRequestError
from limner.home import cache_dir

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of bf16 dot-product units


@dataclass(frozen=True)
class CpuFeatures:
    """The parts of a CPU that decide how fast a model runs on it."""

    name: str
    flags: frozenset[str]
    physical_cores: int  # cores this process may use, not counting SMT siblings
    logical_cpus: int  # CPUs this process may use
    capability: str  # torch.backends.cpu.get_cpu_capability(): the kernels torch picked

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def has_avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    @property
    def has_bf16(self) -> bool:
        """Native bf16 dot products (AMX or AVX512-BF16): bf16 is not emulated. Whether it
        is faster than fp32 is `bf16_is_faster`'s question."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    def key(self, threads: int) -> str:
        """What a measured rate on this CPU depends on, as one cache key."""
        flags = hashlib.sha256(" ".join(sorted(self.flags)).encode()).hexdigest()[:16]
        return f"{self.name}|flags {flags}|torch {torch.__version__}|{threads} threads"

    def describe(self) -> str:
        units = [f for f in BF16_FLAGS if f in self.flags] or ["no bf16 units"]
        return (
            f"{self.name}: {self.physical_cores} physical cores ({self.logical_cpus} CPUs), "
            f"{', '.join(units)}, torch kernels {self.capability}"
        )


def detect_cpu(
    cpuinfo: str | None = None,
    *,
    allowed_cpus: set[int] | None = None,
    cpu_quota: float | None = None,
) -> CpuFeatures:
    """Read the CPU's flags and cores from /proc/cpuinfo (Linux), else from torch.

    `cpuinfo`, `allowed_cpus` and `cpu_quota` default to this machine's (the affinity mask
    and the cgroup CPU limit); tests pass their own.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    if allowed_cpus is None:
        allowed_cpus = _allowed_cpus()
    if cpu_quota is None:
        cpu_quota = _cgroup_cpu_quota()
    processors = _parse_cpuinfo(cpuinfo)
    capability = torch.backends.cpu.get_cpu_capability()
    if not processors:  # not Linux: torch's view only
        logical = len(allowed_cpus) if allowed_cpus else (os.cpu_count() or 1)
        flags = frozenset({"amx_bf16"} if capability.startswith("AMX") else set())
        return CpuFeatures("cpu", flags, _limit(logical, cpu_quota), logical, capability)
    mine = [p for p in processors if not allowed_cpus or p["processor"] in allowed_cpus]
    mine = mine or processors
    flags = frozenset(mine[0]["flags"])
    cores = {(p["physical id"], p["core id"]) for p in mine}
    # Without topology lines (some VMs) count each CPU as a core.
    physical = len(cores) if all(p["core id"] is not None for p in mine) else len(mine)
    return CpuFeatures(
        mine[0]["model name"] or "cpu",
        flags,
        _limit(physical, cpu_quota),
        len(mine),
        capability,
    )


def _parse_cpuinfo(text: str) -> list[dict]:
    processors: list[dict] = []
    for block in text.split("\n\n"):
        entry: dict = {"flags": [], "physical id": None, "core id": None, "model name": ""}
        seen = False
        for line in block.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "processor":
                entry["processor"], seen = int(value), True
            elif key in ("flags", "Features"):  # x86, arm
                entry["flags"] = value.split()
            elif key in ("physical id", "core id"):
                entry[key] = int(value)
            elif key == "model name":
                entry["model name"] = value
        if seen:
            processors.append(entry)
    return processors


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set()


def _cgroup_cpu_quota() -> float:
    """CPUs' worth of time the cgroup grants (inf when unlimited)."""
    candidates = [
        ("/sys/fs/cgroup/cpu.max", None),  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ]
    for quota_path, period_path in candidates:
        try:
            text = Path(quota_path).read_text().split()
            if period_path is None:
                if text[0] == "max":
                    return math.inf
                return int(text[0]) / int(text[1])
            quota = int(text[0])
            if quota <= 0:
                return math.inf
            return quota / int(Path(period_path).read_text())
        except (OSError, ValueError, IndexError):
            continue
    return math.inf


def _limit(cores: int, quota: float) -> int:
    return max(1, min(cores, math.ceil(quota) if math.isfinite(quota) else cores))


class Precision(StrEnum):
    """The floating-point format the UNet and VAE compute in."""

    AUTO = "auto"  # bf16 where it is faster than fp32 on this CPU, else fp32
    BF16 = "bf16"
    FP32 = "fp32"


@dataclass(frozen=True)
class DeepCacheOptions:
    """DeepCache (Ma et al. 2023, arXiv:2312.00858): every `interval`-th step runs the
    whole UNet; the steps between reuse its deep features and recompute only the shallow
    branch: conv_in, the first `branch` layers of the first down block and the last
    `branch` + 1 layers of the last up block."""

    # 2: within 2.5 points of full steps on every `limner eval` figure of the built-in
    # model; 3 (the DeepCache authors' choice for SD) lost 7.5 on the trained names.
    interval: int = 2
    branch: int = 0

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise InvalidRequestError(f"DeepCache interval must be at least 1, got {self.interval}")
        if self.branch < 0:
            raise InvalidRequestError(f"DeepCache branch must be 0 or more, got {self.branch}")


MAX_TOKEN_MERGING = 0.75  # every source of every 2x2 cell merged: one token a cell is left


def check_token_merging_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= MAX_TOKEN_MERGING:
        raise InvalidRequestError(
            f"token merging ratio must be in [0, {MAX_TOKEN_MERGING}] (one token of each 2x2 "
            f"cell is kept), got {ratio}"
        )


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model: what the user asked for, before looking at the CPU.

    Round-trips to JSON (`to_json` / `from_json`). `threads=None` means one per physical
    core; `deepcache=None` runs every step in full; `tiny_decoder` is the path of a
    TAESD-format decoder, used for previews, and for the final image when `fast_decode`.
    `release_text_encoder=None` releases it after encoding only when memory is tight.
    `token_merging` > 0 merges that share of the tokens before each self-attention at full
    latent resolution (ToMe for SD, `limner.runtime.token_merging`): faster, approximate.
    `fp16_weights` keeps the weights of an fp32 run in fp16 and gives each layer fp32
    copies only while it runs (half the memory of fp32 weights, about 10% slower on SD1.5;
    lossless for the fp16 files most checkpoints are); None: only when memory is tight.
    """

    precision: Precision = Precision.AUTO
    channels_last: bool = True
    threads: int | None = None
    deepcache: DeepCacheOptions | None = None
    compile: bool = False  # torch.compile (inductor) the UNet; pays only for long runs
    tiny_decoder: str | None = None
    fast_decode: bool = False
    release_text_encoder: bool | None = None
    fp16_weights: bool | None = None
    token_merging: float = 0.0  # ToMe ratio of the full-resolution self-attentions; 0: off

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "precision", Precision(self.precision))
        except ValueError:
            choices = ", ".join(p.value for p in Precision)
            raise InvalidRequestError(
                f"unknown precision {self.precision!r}: choose one of {choices}"
            ) from None
        if self.threads is not None and self.threads < 1:
            raise InvalidRequestError(f"threads must be at least 1, got {self.threads}")
        check_token_merging_ratio(self.token_merging)
        if self.fast_decode and not self.tiny_decoder:
            raise InvalidRequestError("fast decoding needs a tiny decoder (a TAESD-format file)")
        if self.fp16_weights and self.compile:
            # the per-layer casting hooks and inductor's graphs do not mix
            raise InvalidRequestError(
                "fp16 weights (low memory) and torch.compile exclude each other"
            )

    @classmethod
    def reference(cls) -> RuntimeOptions:
        """The plain fp32 path, as diffusers runs by default (the tests' reference)."""
        return cls(precision=Precision.FP32, channels_last=False)

    def model_key(self) -> tuple:
        """The options that change the loaded weights (dtype, storage, layout, compilation)."""
        return (self.precision.value, self.channels_last, self.compile, self.fp16_weights)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["precision"] = self.precision.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> RuntimeOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidRequestError(f"unknown runtime options: {', '.join(sorted(unknown))}")
        values = dict(data)
        if values.get("deepcache") is not None:
            values["deepcache"] = DeepCacheOptions(**values["deepcache"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> RuntimeOptions:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Runtime:
    """Concrete settings for this machine, from `resolve_runtime`."""

    options: RuntimeOptions
    dtype: torch.dtype
    threads: int
    cpu: CpuFeatures
    notes: tuple[str, ...] = field(default=())  # why a choice was made, for users and bench
    fp16_weights: bool = False  # weights stored in fp16, computed in `dtype` (fp32) layer by layer

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype the weights are kept (and loaded) in."""
        return torch.float16 if self.fp16_weights else self.dtype

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @property
    def weights(self) -> str:
        """The weights' storage precision by name: fp16, bf16 or fp32."""
        return "fp16" if self.fp16_weights else self.precision


BF16_SPEEDUP_TO_USE = 1.2  # bf16/fp32 product rate above which "auto" picks bf16
_PROBE_SIZE = 1024  # a 1024^3 product: ~2 GFLOP, 10-40 ms on these CPUs in either dtype


def bf16_speedup(threads: int, rounds: int = 5) -> float:
    """How many times faster a bf16 matrix product is than an fp32 one here, now.

    The two dtypes alternate and each keeps its best time, so a load that comes and goes
    on a shared machine weighs on both alike.
    """
    previous = torch.get_num_threads()
    if previous != threads:  # the thread pool is global: leave it alone when it fits
        torch.set_num_threads(threads)
    try:
        pairs = {}
        for dtype in (torch.float32, torch.bfloat16):
            a = torch.randn(_PROBE_SIZE, _PROBE_SIZE).to(dtype)
            b = torch.randn(_PROBE_SIZE, _PROBE_SIZE).to(dtype)
            a @ b  # kernel selection, page faults
            pairs[dtype] = (a, b)
        best = {dtype: math.inf for dtype in pairs}
        for _ in range(rounds):
            for dtype, (a, b) in pairs.items():
                start = time.perf_counter()
                a @ b
                best[dtype] = min(best[dtype], time.perf_counter() - start)
        return best[torch.float32] / best[torch.bfloat16]
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def _speedup_cache() -> Path:
    return cache_dir() / "bf16-speedup.json"


def cached_bf16_speedup(
    cpu: CpuFeatures,
    threads: int,
    measure: Callable[[int], float] = bf16_speedup,
    cache: Path | None = None,
) -> float:
    """`measure(threads)` for this CPU, measured once and then read from `cache`."""
    cache = cache or _speedup_cache()
    key = cpu.key(threads)
    try:
        known = json.loads(cache.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}  # absent or unreadable: measure again and rewrite it
    value = known.get(key)
    if isinstance(value, int | float) and value > 0:
        return float(value)
    speedup = float(measure(threads))
    known[key] = speedup
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(known, indent=1, sort_keys=True))
        partial.replace(cache)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only home: measure again next time
    return speedup


@functools.lru_cache(maxsize=16)
def process_bf16_speedup(cpu: CpuFeatures, threads: int) -> float:
    """`cached_bf16_speedup`, also remembered for the life of the process (a process
    whose cache folder changes, as each test's does, measures once all the same)."""
    return cached_bf16_speedup(cpu, threads)


def bf16_is_faster(
    cpu: CpuFeatures,
    threads: int,
    speedup: Callable[[CpuFeatures, int], float] = process_bf16_speedup,
) -> tuple[bool, str]:
    """Whether bf16 beats fp32 on `cpu` with `threads` threads, and why (for notes)."""
    if not cpu.has_bf16:
        return False, "fp32: the CPU has no bf16 units (bf16 would be emulated, slower)"
    if cpu.has_amx_bf16:
        return True, "bf16: the CPU has AMX-BF16 tiles"
    ratio = speedup(cpu, threads)
    if ratio >= BF16_SPEEDUP_TO_USE:
        return True, f"bf16: AVX512-BF16, bf16 products measured {ratio:.2f}x fp32's rate"
    return False, (
        f"fp32: AVX512-BF16 without AMX, bf16 products measured at {ratio:.2f}x fp32's "
        f"rate (bf16 needs {BF16_SPEEDUP_TO_USE}x)"
    )


def resolve_runtime(
    options: RuntimeOptions | None = None,
    cpu: CpuFeatures | None = None,
    speedup: Callable[[CpuFeatures, int], float] = process_bf16_speedup,
) -> Runtime:
    """Pick the dtype and thread count for `options` on `cpu` (default: this machine).

    `speedup(cpu, threads)` is the measured bf16/fp32 rate, asked only for "auto" on a
    CPU with AVX512-BF16 and no AMX; tests pass their own.
    """
    options = options or RuntimeOptions()
    cpu = cpu or detect_cpu()
    threads = options.threads or cpu.physical_cores
    notes = []
    if options.precision is Precision.AUTO:
        faster, why = bf16_is_faster(cpu, threads, speedup)
        dtype = torch.bfloat16 if faster else torch.float32
        notes.append(why)
    elif options.precision is Precision.BF16:
        dtype = torch.bfloat16
        if not cpu.has_bf16:
            notes.append("bf16 forced on a CPU without bf16 units: expect it to be slower")
    else:
        dtype = torch.float32
    fp16_weights = False
    if dtype == torch.float32:  # bf16 weights are 16-bit already
        fp16_weights = options.fp16_weights
        if fp16_weights is None:
            from limner.runtime.memory import memory_is_tight

            fp16_weights = memory_is_tight()
            if fp16_weights:
                notes.append("fp16 weights: memory is tight")
    return Runtime(options, dtype, threads, cpu, tuple(notes), fp16_weights=fp16_weights)


def apply_threads(threads: int) -> None:
    """Use `threads` intra-op threads: one per physical core, since SMT siblings share the
    core's matrix units and only add synchronisation."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
