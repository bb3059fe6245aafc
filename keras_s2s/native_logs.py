"""Keep TensorFlow's C++ start-up logging off a user's terminal.

On a CPU-only machine TensorFlow prints its CUDA probing and oneDNN notices (`I0000 ...
cudart_stub.cc`, `E0000 ... failed call to cuInit`) through absl before absl is
initialised, where `TF_CPP_MIN_LOG_LEVEL` does not reach (tensorflow/tensorflow#100442).
A user reads those lines as failures. The commands therefore route file descriptor 2
through a pipe whose reader drops absl-format lines of severity I, W and E and passes
everything else through unchanged and at once: Python warnings and tracebacks, progress
bars (partial lines), fatal (`F`) lines. `--verbose` skips the filter.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl's prefix: severity, MMDD, time, thread id, file:line]; F (fatal) lines are kept.
_NATIVE_LINE = re.compile(rb"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\n]*:\d+\] ")
_ABSL_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NATIVE_ANYWHERE = re.compile(_NATIVE_LINE.pattern + b"|" + re.escape(_ABSL_NOTICE))
# A partial line held back until its end shows whether it is a native log line.
_NATIVE_PREFIX = re.compile(rb"[IWE](\d{0,4}( [\d:.]*( +\d*( [^\]\n]*\]?)?)?)?)?")


def is_native_log_line(line: bytes) -> bool:
    """Whether `line` (without its newline) is TensorFlow start-up logging to drop."""
    return bool(_NATIVE_LINE.match(line)) or line.startswith(_ABSL_NOTICE)


def _could_become_native(partial: bytes) -> bool:
    return is_native_log_line(partial) or bool(_NATIVE_PREFIX.fullmatch(partial)) or _ABSL_NOTICE.startswith(partial)


class LineFilter:
    """Forwards a byte stream without native log lines. Such a line can start anywhere,
    also after a progress bar's partial line, and ends at a newline; everything else is
    forwarded at once, except a tail that could still become a native line."""

    _LOOKBACK = 160  # longer than any absl prefix or the notice

    def __init__(self, write) -> None:
        self._write = write
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self._pending += data
        while True:
            found = _NATIVE_ANYWHERE.search(self._pending)
            if found is None:
                break
            self._forward(found.start())  # what came before the native line
            end = self._pending.find(b"\n")
            if end < 0:  # the native line is still arriving: hold it
                return
            self._pending = self._pending[end + 1 :]
        self._forward(self._held_from())

    def _held_from(self) -> int:
        first = max(0, len(self._pending) - self._LOOKBACK)
        for start in range(first, len(self._pending)):
            if self._pending[start] in b"IWE" and _could_become_native(self._pending[start:]):
                return start
        return len(self._pending)

    def _forward(self, end: int) -> None:
        if end:
            self._write(self._pending[:end])
            self._pending = self._pending[end:]

    def close(self) -> None:
        if self._pending and not is_native_log_line(self._pending):
            self._write(self._pending)
        self._pending = b""


_installed = False


def filter_native_logs() -> None:
    """Route this process's (and its children's) file descriptor 2 through `LineFilter`
    until the process exits. Call before TensorFlow is imported; idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(terminal, view) :]

    line_filter = LineFilter(write)

    def pump() -> None:
        while data := os.read(read_end, 65536):
            line_filter.feed(data)
        line_filter.close()

    thread = threading.Thread(target=pump, name="native-log-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end held by this process
        thread.join(timeout=2.0)

    atexit.register(restore)
