"""Running the device side in `make test-arm64`'s ARM64 sysroot under QEMU, as one CPU.

QEMU_CPU sets the instructions; the sysroot's /proc/cpuinfo and CPU lists (two cores, as
this machine has) are that CPU's, so that onnxruntime picks its kernels for it. The host's
/proc and /sys stay unmounted there: onnxruntime would read an x86 CPU from them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUINFO = os.path.join(ROOT, "tests", "arm64", "cpus")  # a Pi 4's (cortex-a72) and a Pi 5's (cortex-a76)
SITE = "/opt/s2s/site"  # the aarch64 wheels, inside the sysroot (tests/arm64/sysroot.sh)


def as_cpu(sysroot: str, cpu: str) -> None:
    """Makes the sysroot's /proc/cpuinfo and CPU lists those of `cpu`."""
    shutil.copy(os.path.join(CPUINFO, f"{cpu}.cpuinfo"), os.path.join(sysroot, "proc", "cpuinfo"))
    folder = os.path.join(sysroot, "sys", "devices", "system", "cpu")
    os.makedirs(folder, exist_ok=True)
    for name in ("possible", "present", "online"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write("0-1\n")


def run_as(sysroot: str, cpu: str, command: list[str], pythonpath: str, timeout: int = 1800):
    """Runs `command` in the sysroot as `cpu`, with a clean environment; returns the
    `subprocess.CompletedProcess` (text output)."""
    as_cpu(sysroot, cpu)
    environment = {"PATH": "/usr/bin:/bin", "QEMU_CPU": cpu, "PYTHONPATH": f"{SITE}:{pythonpath}", "HOME": "/tmp"}
    return subprocess.run(
        ["chroot", sysroot, "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in environment.items()], *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
