#!/usr/bin/env bash
# tests/arm64/sysroot.sh SYSROOT: a Debian arm64 root (python3, nodejs) with the device
# side's aarch64 wheels, run under QEMU user-mode emulation (binfmt_misc). Kept between
# runs: a second run only checks that it is complete and that QEMU is registered.
#
# Needs root (apt-get, mmdebstrap, mounting binfmt_misc), or a sysroot made before and a
# registered qemu-aarch64. About 4 minutes and 600 MB the first time.
set -euo pipefail
SYSROOT=${1:?usage: tests/arm64/sysroot.sh SYSROOT}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}
SUITE=bookworm  # Python 3.11, as the wheels below; Node.js 18
# The wheels of the device side, pinned as serving/requirements.txt asks; the stamp holds
# what the sysroot was made from, so a change remakes it.
STAMP="$SYSROOT/.keras-s2s-sysroot"
WANT="$SUITE $(sha256sum "$ROOT/serving/requirements.txt" "$0" | sha256sum | cut -c1-16)"

as_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "tests/arm64/sysroot.sh: $* needs root" >&2
    exit 1
  fi
  "$@"
}

# QEMU user mode and its binfmt_misc registration: an aarch64 ELF then runs as if native.
if ! command -v qemu-aarch64-static >/dev/null || ! command -v mmdebstrap >/dev/null; then
  echo "installing qemu-user-static binfmt-support mmdebstrap arch-test (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support mmdebstrap arch-test >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  as_root mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ "$(cat /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null | head -1)" != enabled ]; then
  as_root update-binfmts --enable qemu-aarch64
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
echo "making the arm64 sysroot $SYSROOT (Debian $SUITE: python3, nodejs; the device side's aarch64 wheels)"
rm -rf "$SYSROOT" "$SYSROOT.new"
mkdir -p "$(dirname "$SYSROOT")"
as_root mmdebstrap --quiet --arch=arm64 --variant=essential --include=python3,nodejs "$SUITE" "$SYSROOT.new"
# The host's pip puts the aarch64 wheels in: onnxruntime's need glibc 2.28 (bookworm has 2.36).
"$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$SYSROOT.new/opt/s2s/site" \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --implementation cp \
  --python-version 3.11 --only-binary=:all: -r "$ROOT/serving/requirements.txt"
echo "$WANT" > "$SYSROOT.new/.keras-s2s-sysroot"
mv "$SYSROOT.new" "$SYSROOT"
du -sh "$SYSROOT" | sed 's/^/arm64 sysroot: /'
