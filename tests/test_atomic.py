"""One atomic writer: files and folders appear whole or not at all; nothing temporary stays behind."""

import os

import pytest

from reftlab.atomic import atomic_folder, write_json, write_text


def test_write_text_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = write_text(tmp_path / "sub" / "a.txt", "old")
    write_json(p, {"x": "é"})
    assert p.read_text(encoding="utf-8") == '{\n  "x": "é"\n}\n'
    assert [x.name for x in p.parent.iterdir()] == ["a.txt"]


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    p = write_text(tmp_path / "a.txt", "old")

    def fail(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text(p, "new")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_an_exception_inside_atomic_folder_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("boom")
    assert (target / "a").read_text() == "1" and [x.name for x in tmp_path.iterdir()] == ["ckpt"]
    with atomic_folder(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(x.name for x in target.iterdir()) == ["b"]


def test_paths_of_the_wrong_kind_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"), atomic_folder(tmp_path / "file"):
        pass
    with pytest.raises(ValueError, match="is a folder"):
        write_text(tmp_path, "x")
