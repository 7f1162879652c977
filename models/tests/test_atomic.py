"""vimgeo.atomic: the new contents land whole, a failure leaves the old file (or nothing) and no temporary."""

from __future__ import annotations

import os
import stat

import pytest

from vimgeo import atomic
from vimgeo.atomic import atomic_open, atomic_write_bytes, atomic_write_text


def test_bytes_and_text_land_whole_in_a_new_folder_readable_by_all(tmp_path):
    target = tmp_path / "sub" / "dir" / "model.onnx"
    atomic_write_bytes(target, b"\x00\x01 bytes")
    assert target.read_bytes() == b"\x00\x01 bytes"
    atomic_write_text(target, "text \u00e9\n")
    assert target.read_bytes() == "text \u00e9\n".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


def test_a_failed_replace_leaves_old_file_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    atomic_write_bytes(target, b"old contents")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new contents that never land")
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "new.onnx", b"never lands")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_open(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "x.json", "{}\n")
    assert events == ["fsync", "replace", "fsync"]


def test_only_binary_or_text_writing(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "ab"):
        pass
    assert not list(tmp_path.iterdir())
    assert atomic.FILE_MODE == 0o644
