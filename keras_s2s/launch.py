"""Start a multi-worker training run on this machine, for trying it out.

`s2s launch-local --workers 2 --config tiny --run-dir runs/mw` starts two
`s2s train` processes with a `TF_CONFIG` on loopback ports, which is what two
machines would run with their own host names. Worker 0 is the chief and writes
the run directory; every line a worker prints is forwarded with its index.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind((host, 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def tf_config(hosts: list[str], index: int) -> str:
    """The `TF_CONFIG` of worker `index` in a cluster of `hosts` (`host:port`)."""
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def _forward(stream, prefix: str, sink) -> None:
    for raw in iter(stream.readline, b""):
        sink.write(prefix + raw.decode("utf-8", errors="replace").rstrip("\r\n") + "\n")
        sink.flush()
    stream.close()


def launch_local(
    train_args: list[str],
    workers: int = 2,
    host: str = "127.0.0.1",
    ports: list[int] | None = None,
    env: dict | None = None,
) -> int:
    """Runs `s2s train TRAIN_ARGS` as `workers` processes of one cluster.

    Returns 0 when every worker succeeds, else the first failing exit status.
    When one worker fails the others are stopped: a collective operation would
    otherwise wait for it forever.
    """
    if workers < 1:
        raise ValueError(f"--workers: {workers} is not a positive number of workers")
    ports = ports or free_ports(workers, host)
    hosts = [f"{host}:{port}" for port in ports]
    base_env = dict(os.environ if env is None else env)
    processes, threads = [], []
    for index in range(workers):
        worker_env = dict(base_env, TF_CONFIG=tf_config(hosts, index))
        command = [sys.executable, "-m", "keras_s2s.cli", "train", *train_args]
        if index and "--progress" not in train_args:
            command += ["--progress", "2"]  # one line per epoch from the others
        process = subprocess.Popen(command, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes.append(process)
        print(f"launch-local: worker {index} pid {process.pid} on {hosts[index]}", file=sys.stderr)
        thread = threading.Thread(target=_forward, args=(process.stdout, f"[worker {index}] ", sys.stderr), daemon=True)
        thread.start()
        threads.append(thread)
    status = 0
    try:
        remaining = set(range(workers))
        while remaining:
            for index in sorted(remaining):
                code = processes[index].poll()
                if code is None:
                    continue
                remaining.discard(index)
                if code and not status:
                    status = code
                    print(
                        f"launch-local: worker {index} exited with status {code}; stopping the others",
                        file=sys.stderr,
                    )
                    for other in remaining:
                        processes[other].send_signal(signal.SIGTERM)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        status = 130
    finally:
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in threads:
            thread.join(timeout=5)
    return status
