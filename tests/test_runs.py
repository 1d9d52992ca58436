"""Atomic writes and run records."""
import json

import pytest

from eapnet.runs import atomic_path, atomic_write_json, atomic_write_text, make_run_dir, record_run


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # no temporary left behind


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os

    target = tmp_path / "p.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path


def test_record_run_has_args_versions_and_commit(tmp_path):
    run = make_run_dir(tmp_path / "r", "x")
    rec = json.loads(record_run(run, {"target": "100G"}).read_text())
    assert rec["args"] == {"target": "100G"}
    assert rec["versions"]["torch"].startswith("2.")
    assert "python" in rec["versions"] and "git_commit" in rec


def test_make_run_dir_default_name_and_file_clash(tmp_path):
    d = make_run_dir(None, "smoke", root=tmp_path)
    assert d.is_dir() and d.name.startswith("smoke-")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        make_run_dir(f, "x")
