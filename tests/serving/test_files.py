"""The atomic writer: a file or directory appears under its name complete or not at all."""

import os

import pytest

from serving.files import (
    OLD,
    atomic_path,
    atomic_write,
    is_temporary_of,
    recover_directory,
    replace_directory,
    temporary_path,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as handle:
            handle.write("new, half written")
            raise RuntimeError("killed midway")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(str(target), fsync=True) as handle:
        handle.write("new\n")
        assert target.read_text() == "old"  # nothing under the name until the block ends
    assert target.read_text() == "new\n"
    with atomic_write(str(target), "wb") as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["out.txt"]


def test_the_temporary_name_keeps_the_extension_writers_choose_formats_by(tmp_path):
    with atomic_path(str(tmp_path / "last.weights.h5")) as temporary:
        assert temporary.endswith(".weights.h5") and os.path.dirname(temporary) == str(tmp_path)
        assert is_temporary_of(os.path.basename(temporary), "last.weights.h5")
        with open(temporary, "w") as handle:
            handle.write("weights")
    assert (tmp_path / "last.weights.h5").read_text() == "weights"
    assert not is_temporary_of("last.weights.h5", "last.weights.h5")
    assert not is_temporary_of(os.path.basename(temporary_path(str(tmp_path / "a.onnx"))), "b.onnx")


def test_a_failed_directory_writer_leaves_no_partial_directory(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(str(tmp_path / "saved_model")) as temporary:
            os.makedirs(os.path.join(temporary, "variables"))
            raise ValueError("the check failed")
    assert os.listdir(tmp_path) == []


def _directory(path, text):
    os.makedirs(path)
    with open(os.path.join(path, "manifest.json"), "w") as handle:
        handle.write(text)


def _text(path):
    with open(os.path.join(path, "manifest.json")) as handle:
        return handle.read()


def test_a_directory_is_replaced_whole(tmp_path):
    out, new = str(tmp_path / "bundle"), temporary_path(str(tmp_path / "bundle"))
    _directory(out, "old")
    _directory(new, "new")
    replace_directory(new, out)
    assert _text(out) == "new" and os.listdir(tmp_path) == ["bundle"]


def test_recovery_after_a_kill_between_the_two_renames_puts_the_old_directory_back(tmp_path):
    out = str(tmp_path / "g2p.bundle")
    _directory(temporary_path(out), "half written")  # the new one, not complete
    _directory(temporary_path(out, OLD), "old")  # the old one, moved aside
    recover_directory(out)
    assert _text(out) == "old" and os.listdir(tmp_path) == ["g2p.bundle"]
    _directory(temporary_path(out, OLD), "older")  # moved aside, the new one in place
    recover_directory(out)
    assert _text(out) == "old" and os.listdir(tmp_path) == ["g2p.bundle"]
