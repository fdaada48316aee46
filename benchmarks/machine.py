"""What the machine running a benchmark can do, for the scripts in benchmarks/: the device, the dtype that
runs at speed there (and why), the memory there is, and flushed progress lines with the elapsed time.

A CPU without bf16 matmul hardware (no AMX-bf16, no AVX512-BF16: an AVX2-only EPYC, say) runs bf16
matmuls emulated, tens of times slower than fp32; `choose_dtype` picks fp32 there unless bf16 is forced.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of bf16 matmul hardware
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
GIB = 2**30


class Progress:
    """One flushed status line per call on stderr, prefixed with the seconds since it was made."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {message}", file=self.stream or sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------
# The CPU


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux
        return ""


def cpu_flags() -> set[str]:
    """The first processor's feature flags (Linux), else the empty set."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "cpu"


def cpu_capability() -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # older torch
        return None


def matmul_probe(rows: int = 64, width: int = 512, tries: int = 3) -> dict[str, float]:
    """Best-of-`tries` time of one (rows, width) @ (width, width) matmul in fp32 and in bf16 on one CPU
    thread (several threads on a shared machine time the scheduler, not the kernel).

    Small on purpose (~34 MFLOP): about 0.15 s where bf16 is emulated."""
    out: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("float32", "bfloat16"):
            a = torch.randn(rows, width, generator=gen).to(DTYPES[name])
            b = torch.randn(width, width, generator=gen).to(DTYPES[name])
            a @ b  # first call: kernel selection
            best = float("inf")
            for _ in range(tries):
                t0 = time.perf_counter()
                a @ b
                best = min(best, time.perf_counter() - t0)
            out[f"{name}_ms"] = round(best * 1000.0, 3)
    finally:
        torch.set_num_threads(threads)
    out["bf16_over_fp32"] = round(out["bfloat16_ms"] / max(out["float32_ms"], 1e-9), 2)
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # not available on this platform
        return None


def cpu_report(probe: bool = True) -> dict[str, Any]:
    """What the CPU offers for bf16: flags, torch's kernel capability, and (optionally) the timed probe."""
    flags = cpu_flags()
    report: dict[str, Any] = {
        "name": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "capability": cpu_capability(),
        "bf16_flags": sorted(f for f in BF16_CPU_FLAGS if f in flags),
        "flags_read": bool(flags),
        "load_average": load_average(),
    }
    if probe:
        report["probe"] = matmul_probe()
    return report


# ----------------------------------------------------------------------------------------------------
# The dtype


@dataclass
class DtypeChoice:
    dtype: torch.dtype
    reason: str
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def cpu_has_fast_bf16(report: dict[str, Any]) -> bool:
    """bf16 matmul hardware by the /proc/cpuinfo flags; where they cannot be read (not Linux), a probe in
    which bf16 is not slower than fp32."""
    if report["flags_read"]:
        return bool(report["bf16_flags"])
    probe: dict[str, float] = report.get("probe") or {}
    return bool(probe) and probe["bf16_over_fp32"] <= 1.0


def choose_dtype(requested: str, device: torch.device) -> DtypeChoice:
    """`requested` is 'auto' or a name of DTYPES. auto: bf16 on a CUDA device that supports it; on the
    CPU bf16 only with bf16 matmul hardware, else fp32 (bf16 would be emulated)."""
    if device.type == "cuda":
        if requested != "auto":
            return DtypeChoice(DTYPES[requested], f"forced by --dtype {requested}")
        if torch.cuda.is_bf16_supported():
            return DtypeChoice(torch.bfloat16, "auto: the CUDA device supports bf16")
        return DtypeChoice(torch.float32, "auto: this CUDA device has no bf16 support")
    report = cpu_report()
    fast = cpu_has_fast_bf16(report)
    probe = report["probe"]
    evidence = (
        f"flags {'/'.join(report['bf16_flags']) or 'without amx_bf16/avx512_bf16'}"
        f"{'' if report['flags_read'] else ' (unreadable)'}, torch capability {report['capability']}, "
        f"probe: a bf16 matmul takes {probe['bf16_over_fp32']:.2f}x the fp32 time"
    )
    if requested != "auto":
        warn = "" if fast or requested != "bfloat16" else " (this CPU has no bf16 matmul hardware: slow)"
        return DtypeChoice(DTYPES[requested], f"forced by --dtype {requested}{warn}; {evidence}", report)
    if fast:
        return DtypeChoice(torch.bfloat16, f"auto: this CPU runs bf16 in hardware ({evidence})", report)
    return DtypeChoice(
        torch.float32,
        f"auto: this CPU has no bf16 matmul hardware, bf16 would be emulated ({evidence})",
        report,
    )


# ----------------------------------------------------------------------------------------------------
# The device and its memory


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return cpu_name()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _cgroup_room() -> int | None:
    """Bytes the cgroup (v2) still allows, when it sets a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isdigit() or int(limit) >= 2**60:
        return None
    return max(int(limit) - int(used), 0)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device (CUDA), or the host's MemAvailable within any cgroup limit; None if
    unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    room: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        room = None
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return room


def device_report(device: torch.device) -> dict[str, Any]:
    import transformers

    name = device_name(device)
    report: dict[str, Any] = {
        "kind": device.type,
        "name": name,
        "slug": slug(name),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report |= {
            "cuda": torch.version.cuda,
            "capability": f"{props.major}.{props.minor}",
            "memory_total_gib": round(props.total_memory / GIB, 1),
            "device_count": torch.cuda.device_count(),
        }
    return report


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
