"""TensorFlow's native start-up logging is filtered off file descriptor 2; nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys

from keras_s2s.native_logs import LineFilter, is_native_log_line

CUINIT = b"E0000 00:00:1796192908.010895    2393 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
ONEDNN = b"I0000 00:00:1796192905.446682    2393 port.cc:153] oneDNN custom operations are on.\n"
NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
FATAL = b"F0000 00:00:1796192905.446682    2393 check.cc:1] Check failed: x\n"


def _filtered(chunks: list[bytes]) -> bytes:
    out: list[bytes] = []
    line_filter = LineFilter(out.append)
    for chunk in chunks:
        line_filter.feed(chunk)
    line_filter.close()
    return b"".join(out)


def test_native_lines_are_recognised():
    assert is_native_log_line(CUINIT[:-1]) and is_native_log_line(ONEDNN[:-1]) and is_native_log_line(NOTICE[:-1])
    assert not is_native_log_line(FATAL[:-1])
    assert not is_native_log_line(b"[s2s] epoch 1: dev sample PER 90.91%")
    assert not is_native_log_line(b"Error: a file could not be read")


def test_filter_drops_native_lines_and_keeps_the_rest_in_order():
    kept = b"[s2s] splits: train 513\nTraceback (most recent call last):\n" + FATAL
    stream = NOTICE + ONEDNN + b"[s2s] splits: train 513\n" + CUINIT + b"Traceback (most recent call last):\n" + FATAL
    assert _filtered([stream]) == kept
    # The same stream cut into pieces of every size, including mid-line and one byte.
    for size in (1, 3, 7, 40):
        assert _filtered([stream[i : i + size] for i in range(0, len(stream), size)]) == kept


def test_partial_lines_pass_at_once():
    """A progress bar redraws one line without a newline: it must not wait for one."""
    out: list[bytes] = []
    line_filter = LineFilter(out.append)
    line_filter.feed(b"\rdecoding:  10%|#")
    assert b"".join(out) == b"\rdecoding:  10%|#"
    line_filter.feed(b"#  | 20/200\rdecoding:  20%")
    assert b"".join(out).endswith(b"\rdecoding:  20%")
    # A line that starts like a native one is held until it is known.
    line_filter.feed(b"\nE0000 00:00")
    assert not b"".join(out).endswith(b"E0000 00:00")
    line_filter.feed(b":1.5 7 x.cc:3] probing\nEpoch 1/2")
    assert b"".join(out).endswith(b"\nEpoch 1/2") and b"probing" not in b"".join(out)


def test_a_native_line_after_a_progress_bar_is_cut_out():
    """C++ writes its line after tqdm's partial line; the next redraw must land on the bar's line."""
    stream = b"\rdecoding:   0%|   | 0/40" + CUINIT + b"\rdecoding: 100%|###| 40/40\n" + b"test PER 82.62%\n"
    expected = b"\rdecoding:   0%|   | 0/40\rdecoding: 100%|###| 40/40\ntest PER 82.62%\n"
    for size in (1, 5, len(stream)):
        assert _filtered([stream[i : i + size] for i in range(0, len(stream), size)]) == expected


def test_a_process_with_the_filter_prints_only_what_matters():
    program = (
        "import os, sys\n"
        "from keras_s2s.native_logs import filter_native_logs\n"
        "filter_native_logs()\n"
        f"os.write(2, {NOTICE + CUINIT!r})\n"
        "print('a python warning', file=sys.stderr)\n"
        f"os.write(2, {ONEDNN!r})\n"
        "raise SystemExit('stopped: bad input')\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == b"a python warning\nstopped: bad input\n"


def test_the_commands_are_quiet_and_verbose_brings_tensorflow_back(tiny_run):
    """`s2s evaluate` as a command: no absl lines; `--verbose` shows TensorFlow's own logging."""
    run_dir, _ = tiny_run
    command = [sys.executable, "-m", "keras_s2s.cli", "evaluate", run_dir, "--beam", "1", "--samples", "0"]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not any(is_native_log_line(line.encode()) for line in quiet.stderr.splitlines()), quiet.stderr
    assert "cuInit" not in quiet.stderr
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0
    # What the quiet run printed is all there with --verbose, plus TensorFlow's own lines
    # on a machine where it logs at start-up.
    shown = [line for line in verbose.stderr.splitlines() if not is_native_log_line(line.encode())]
    assert [line for line in shown if line.startswith("[s2s]")] == [
        line for line in quiet.stderr.splitlines() if line.startswith("[s2s]")
    ]
    if not os.path.exists("/proc/driver/nvidia"):
        # Without CUDA drivers TensorFlow always says so at start-up ("Could not find cuda drivers").
        assert any(is_native_log_line(line.encode()) for line in verbose.stderr.splitlines())


def test_verbose_is_a_flag_and_the_old_verbose_n_means_progress_n(capsys):
    from keras_s2s.cli import _legacy_verbose, build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--config", "tiny", "--run-dir", "r", "--verbose"])
    assert _legacy_verbose(args) is True and args.progress is None
    args = parser.parse_args(["train", "--config", "tiny", "--run-dir", "r", "--verbose", "2"])
    assert _legacy_verbose(args) is False and args.progress == 2
    assert "--verbose 2 is now --progress 2" in capsys.readouterr().err
    args = parser.parse_args(["evaluate", "run", "--verbose"])
    assert _legacy_verbose(args) is True
