"""Which CPU family runs onnxruntime's INT8 kernels here.

onnxruntime's dynamic quantisation multiplies u8 activations by s8 weights. x86-64 CPUs
with VNNI (AVX-512 VNNI, AVX-VNNI) add those products up in 32 bits; AVX2-only CPUs pair
them into 16-bit sums that can saturate; ARM64 CPUs use NEON, or the dot-product
instructions where they have them. So an INT8 model's outputs depend on the family, and a
bundle's manifest names the family its INT8 gate ran on.

numpy reads the CPU's features itself (CPUID, HWCAP), so this holds under QEMU too, where
/proc/cpuinfo describes the host.
"""

from __future__ import annotations

import platform

FAMILIES = ("x86-64 VNNI", "x86-64 AVX2", "x86-64", "ARM64 dot product", "ARM64")


def cpu_family() -> str:
    """One of `FAMILIES`, or the machine's name for other CPUs."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        if features.get("AVX512VNNI") or features.get("AVXVNNI"):
            return "x86-64 VNNI"
        return "x86-64 AVX2" if features.get("AVX2") else "x86-64"
    if machine in ("aarch64", "arm64"):
        return "ARM64 dot product" if features.get("ASIMDDP") else "ARM64"
    return machine
