"""Shared helpers of the benchmarks: machine description, tables, JSON output."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")


def machine() -> dict:
    """CPU model, core count, memory and library versions of this run."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            memory = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for name in ("numpy", "onnxruntime", "tensorflow", "keras", "torch"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
    }


class Timed:
    """Wraps a callable and adds up the seconds spent in it, its calls, and the last call's
    positional arguments."""

    def __init__(self, function):
        self.function = function
        self.seconds = 0.0
        self.calls = 0
        self.last = None

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        self.calls += 1
        self.last = args
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.function, name)


def median(values) -> float:
    return float(statistics.median(values))


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return float(ordered[index])


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `rows` (dicts) with the given columns."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_result(name: str, payload: dict, path: str | None = None) -> str:
    path = path or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from serving.files import atomic_write

    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2)
    return path


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        return "unknown"


@contextlib.contextmanager
def demo_page(bundle_dir: str):
    """The demo page over `bundle_dir` from a static server on 127.0.0.1 (a folder holding
    web/ and the bundle, as `python -m http.server` serves the repository); yields its URL."""
    import functools
    import http.server
    import tempfile
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    with tempfile.TemporaryDirectory() as site:
        os.symlink(os.path.join(ROOT, "web"), os.path.join(site, "web"))
        os.symlink(os.path.abspath(bundle_dir), os.path.join(site, "bundle"))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/web/index.html?bundle=../bundle/"
        finally:
            server.shutdown()
            server.server_close()
