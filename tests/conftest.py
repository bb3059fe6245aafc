"""Shared test set-up: quiet TensorFlow, two logical CPUs, a tiny trained run.

`make test` runs pytest twice: once as it is (TensorFlow), once with `KERAS_BACKEND=torch`
for `tests/torch_backend/` alone, without TensorFlow in the process.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402


def _split_cpu() -> None:
    """Two logical CPU devices, so MirroredStrategy can run on one machine."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:
        pass  # Already initialised in this process.


TORCH = os.environ["KERAS_BACKEND"] == "torch"
if TORCH:
    sys.modules["tensorflow"] = None  # the torch backend's code must not need TensorFlow
    import torch

    # On a GPU (bench/gpu_checks.sh) the tolerances are for float32 products, not TF32's.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    collect_ignore_glob = [path for path in os.listdir(os.path.dirname(__file__)) if path != "torch_backend"]
else:
    collect_ignore_glob = ["torch_backend"]
    # The ARM64 comparison needs its sysroot under QEMU: `make test-arm64` runs it.
    if not os.environ.get("S2S_ARM64"):
        collect_ignore_glob.append("arm64")
    _split_cpu()


def tiny_config(**overrides):
    """The `tiny` preset with `section.key=value` overrides."""
    from keras_s2s.config import load_preset

    return load_preset("tiny").override([f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One `MirroredStrategy` over the two logical CPUs for the whole session: two
    strategies in one process can draw the same collective-op keys and then abort
    each other's all-reduces."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny CMUdict model trained once per session: `(run_dir, summary)`."""
    from keras_s2s.training import train

    run_dir = str(tmp_path_factory.mktemp("tiny_run"))
    config = tiny_config(**{"training.epochs": 3, "training.average_last_epochs": 2})
    summary = train(config, run_dir, verbose=0)
    return run_dir, summary


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory):
    """The tiny run exported once per session (float32 + INT8 + SavedModel):
    `(run_dir, bundle_dir, saved_model_dir, manifest)`."""
    from export.bundle import ExportOptions, export_bundle

    run_dir, _ = tiny_run
    out = str(tmp_path_factory.mktemp("bundles") / "tiny")
    saved_model = str(tmp_path_factory.mktemp("saved") / "tiny")
    # The 32-unit test model is too small for INT8 to keep its quality: no INT8 limit here.
    manifest = export_bundle(
        run_dir,
        out,
        ExportOptions(quantize="int8", saved_model_dir=saved_model, max_int8_loss=100.0, gate_sentences=40),
    )
    return run_dir, out, saved_model, manifest
