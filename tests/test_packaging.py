"""`pip install keras-s2s` is the device side: a fresh virtual environment with the wheel
and no extras translates with a bundle, and has neither TensorFlow nor Keras; the `train`
extra adds the training side."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from serving import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory):
    """The wheel built from this checkout, installed without extras into a new venv."""
    base = tmp_path_factory.mktemp("packaging")
    wheels = base / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", wheels, REPO])
    (wheel,) = [name for name in os.listdir(wheels) if name.endswith(".whl")]
    assert wheel.startswith(f"keras_s2s-{__version__}-")
    environment = base / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    bin_dir = environment / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheels / wheel])
    return bin_dir, wheels / wheel


def test_the_base_install_has_no_tensorflow_or_keras(device_venv):
    device_venv, _ = device_venv
    probe = (
        "import importlib.util as u; "
        "print(*[n for n in ('tensorflow', 'keras', 'tf2onnx', 'sacrebleu', 'numpy', 'onnxruntime', "
        "'sentencepiece', 'tqdm') if u.find_spec(n)])"
    )
    found = _run([device_venv / "python", "-c", probe], cwd=device_venv).stdout.split()
    assert found == ["numpy", "onnxruntime", "sentencepiece", "tqdm"]


def test_the_base_install_translates_like_the_checkout(device_venv, tiny_bundle, tmp_path):
    device_venv, _ = device_venv
    words = tmp_path / "words.txt"
    words.write_text("keras\nphoneme\n\nonnxruntime\n", encoding="utf-8")
    command = ["-i", str(words), "--beam", "3", "--n-best", "2", "--json"]
    installed = _run([device_venv / "s2s-translate", tiny_bundle[1], *command], cwd=tmp_path)
    here = _run([sys.executable, "-m", "serving.cli", tiny_bundle[1], *command], cwd=REPO)
    assert installed.stdout == here.stdout and len(installed.stdout.splitlines()) == 4
    version = _run([device_venv / "s2s-translate", "--version"], cwd=tmp_path).stdout
    assert version.split() == ["s2s-translate", __version__]


def test_the_training_commands_say_which_extra_they_need(device_venv, tmp_path):
    device_venv, _ = device_venv
    for command in (["s2s", "train", "--config", "tiny", "--run-dir", "run"], ["s2s-export", "run", "--out", "b"]):
        result = subprocess.run([device_venv / command[0], *command[1:]], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "pip install 'keras-s2s[train]'" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_train_extra_adds_training(device_venv, tmp_path):
    """Last in this file: it turns the device environment into a training one."""
    bin_dir, wheel = device_venv
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", f"{wheel}[train]"])
    _run([bin_dir / "s2s", "train", "--config", "tiny", "--run-dir", "run", "--progress", "0"], cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoints" / "best.weights.h5").exists()
