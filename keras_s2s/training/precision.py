"""`training.mixed_precision: auto`: bfloat16 where the hardware computes it natively, float32
elsewhere.

Mixed precision pays only where the matrix products run natively in the low precision: on
GPUs, and on CPUs with AVX-512 BF16 or AMX. On other CPUs (AVX2-only x86, most ARM boards)
a bfloat16 product runs no faster than a float32 one and costs accuracy, so `auto` trains
in float32 there. An explicit `bfloat16`, `float16` or `none` is used as given.
"""

from __future__ import annotations

import platform

# CPU flags (as /proc/cpuinfo names them) under which bfloat16 products run natively.
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(setting: str, *, gpus: int, flags: set[str] | None = None) -> tuple[str, str]:
    """`(precision, why)`: the mixed precision to train with (`none`, `bfloat16` or
    `float16`) for the configured `setting` on a machine with `gpus` GPUs and CPU `flags`."""
    if setting != "auto":
        return setting, "as configured"
    if gpus:
        return "bfloat16", f"auto: {gpus} GPU(s)"
    flags = cpu_flags() if flags is None else flags
    native = sorted(set(NATIVE_BFLOAT16_FLAGS) & flags)
    if native:
        return "bfloat16", f"auto: the CPU computes bfloat16 natively ({', '.join(native)})"
    return (
        "none",
        f"auto: float32, the CPU ({platform.machine() or 'unknown'}) has no native bfloat16 ({' or '.join(NATIVE_BFLOAT16_FLAGS)})",
    )
