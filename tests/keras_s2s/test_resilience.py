"""Multi-worker training on loopback and resuming after `kill -9`, as real processes."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Small enough to be quick, long enough (4 epochs, a backup every 4 steps) to be
# killed in the middle of an epoch.
SETTINGS = [
    "--set",
    "training.epochs=4",
    "--set",
    "training.eval_sample_size=0",
    "--set",
    "training.save_every_steps=4",
]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("TF_CONFIG", None)
    return env


def _s2s(*args):
    return [sys.executable, "-m", "keras_s2s.cli", *args]


class _Process:
    """A child process whose combined output is collected line by line."""

    def __init__(self, command):
        self.process = subprocess.Popen(
            command,
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def wait(self, timeout=600):
        code = self.process.wait(timeout=timeout)
        self.thread.join(timeout=10)
        return code

    @property
    def output(self):
        return "".join(self.lines)


def _run(command, timeout=600):
    process = _Process(command)
    code = process.wait(timeout)
    assert code == 0, process.output[-4000:]
    return process.output


def _wait_for_backup_mid_epoch(run_dir, process, min_epoch=1, timeout=300):
    """Waits until the chief's backup is inside an epoch >= `min_epoch`."""
    state_path = os.path.join(run_dir, "backup", "state.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.process.poll() is None, process.output[-4000:]
        try:
            with open(state_path, encoding="utf-8") as handle:
                state = json.load(handle)
            if state["epoch"] >= min_epoch and state["batch"] > 0:
                return state
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no mid-epoch backup after {timeout} s\n" + process.output[-4000:])


def _epochs_logged(run_dir):
    with open(os.path.join(run_dir, "train_log.csv"), encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _summary(run_dir):
    with open(os.path.join(run_dir, "train_summary.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _digests(output):
    return re.findall(r"^\[worker (\d+)\] .*weights digest ([0-9a-f]+)", output, re.MULTILINE)


@pytest.fixture(scope="module")
def single_worker_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("single") / "run")
    _run(_s2s("train", "--config", "tiny", "--run-dir", run_dir, "--progress", "0", *SETTINGS))
    return run_dir


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("two") / "run")
    output = _run(
        _s2s("launch-local", "--workers", "2", "--config", "tiny", "--run-dir", run_dir, "--progress", "2", *SETTINGS)
    )
    return run_dir, output


def test_two_workers_train_to_the_end_in_step(two_worker_run, single_worker_run):
    run_dir, output = two_worker_run
    # Both finished with the same weights, bit for bit.
    digests = dict(_digests(output))
    assert set(digests) == {"0", "1"}, output[-4000:]
    assert digests["0"] == digests["1"]
    # Only the chief wrote the run directory; the other worker's scratch is gone.
    assert _epochs_logged(run_dir) == [0, 1, 2, 3]
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "last.weights.h5"))
    assert [name for name in os.listdir(run_dir) if name.startswith(".worker")] == []
    # The global batch is split between the workers: the same training as one worker.
    two, one = _summary(run_dir), _summary(single_worker_run)
    assert two["epochs_run"] == one["epochs_run"] == 4
    assert two["best_val_loss"] == pytest.approx(one["best_val_loss"], rel=0.05)


def test_kill_9_in_mid_epoch_then_the_same_command_resumes(tmp_path, single_worker_run):
    run_dir = str(tmp_path / "run")
    command = _s2s("train", "--config", "tiny", "--run-dir", run_dir, "--progress", "0", *SETTINGS)
    first = _Process(command)
    state = _wait_for_backup_mid_epoch(run_dir, first)
    first.process.send_signal(signal.SIGKILL)
    first.wait()
    logged_before = _epochs_logged(run_dir)
    assert len(logged_before) < 4

    output = _run(command)
    assert f"resuming from {os.path.join(run_dir, 'backup')}" in output
    summary = _summary(run_dir)
    # The run ends at the planned epoch count; only what was left ran again.
    assert _epochs_logged(run_dir) == [0, 1, 2, 3]
    assert summary["epochs_run"] == 4 - state["epoch"]
    assert summary["best_val_loss"] == pytest.approx(_summary(single_worker_run)["best_val_loss"], rel=0.05)
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def test_one_of_two_workers_killed_then_both_restarted(tmp_path, two_worker_run):
    run_dir = str(tmp_path / "run")
    command = _s2s(
        "launch-local", "--workers", "2", "--config", "tiny", "--run-dir", run_dir, "--progress", "2", *SETTINGS
    )
    first = _Process(command)
    state = _wait_for_backup_mid_epoch(run_dir, first)
    pids = dict(re.findall(r"launch-local: worker (\d+) pid (\d+)", first.output))
    os.kill(int(pids["1"]), signal.SIGKILL)
    assert first.wait() != 0  # The launcher stops the chief and reports the failure.

    output = _run(command)
    assert "resuming from" in output
    digests = dict(_digests(output))
    assert digests["0"] == digests["1"]
    summary = _summary(run_dir)
    assert summary["epochs_run"] <= 4 - state["epoch"]
    assert _epochs_logged(run_dir)[-1] == 3
    assert summary["best_val_loss"] == pytest.approx(_summary(two_worker_run[0])["best_val_loss"], rel=0.05)
    assert [name for name in os.listdir(run_dir) if name.startswith(".worker")] == []
