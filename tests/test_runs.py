"""Atomic writes and run records."""
import json

import pytest

from eapnet.runs import OutputExistsError, atomic_path, atomic_write_json, atomic_write_text, make_run_dir, record_run


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
    from eapnet.cpu import cpu_features, cpu_name

    assert rec["machine"].startswith(cpu_name())   # the CPU and the ISA extensions that decide int8 speed
    assert all(f in rec["machine"] for f in cpu_features())


def test_cpu_features_read_the_flags(tmp_path, monkeypatch):
    import builtins

    from eapnet import cpu

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Test CPU\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
    assert cpu.cpu_features() == ["avx2", "avx512f", "avx512_vnni"]
    assert cpu.machine().startswith("Test CPU, ") and cpu.machine().endswith("avx2 avx512f avx512_vnni")
    assert not cpu.native_bf16()
    info.write_text("model name\t: Bf16 CPU\nflags\t\t: avx2 avx512f avx512_bf16\n")
    assert cpu.native_bf16() and cpu.cpu_name() == "Bf16 CPU"
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2\n")
    assert cpu.cpu_features() == [] and cpu.machine().endswith("no AVX2")


def test_make_run_dir_default_name_and_file_clash(tmp_path):
    d = make_run_dir(None, "smoke", root=tmp_path)
    assert d.is_dir() and d.name.startswith("smoke-")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        make_run_dir(f, "x")


def _finished_run(folder):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"args": {}}')
    (folder / "model.pt").write_bytes(b"weights of a finished run")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.txt").write_text("x")
    return folder


def test_make_run_dir_refuses_a_folder_with_files_unless_overwrite(tmp_path):
    run = _finished_run(tmp_path / "run")
    with pytest.raises(OutputExistsError, match=r"--out .*run already holds files.*--overwrite"):
        make_run_dir(run, "x")
    with pytest.raises(OutputExistsError, match="--resume R to continue it"):
        make_run_dir(run, "x", resume_hint="--resume R to continue it")
    assert (run / "model.pt").read_bytes() == b"weights of a finished run"   # nothing touched
    assert make_run_dir(run, "x", overwrite=True) == run
    assert list(run.iterdir()) == []                                          # no file of the old run survives
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_run_dir(empty, "x") == empty                                  # an empty folder is fine


def test_overwrite_never_empties_a_folder_this_tool_did_not_write(tmp_path):
    home = tmp_path / "photos"
    home.mkdir()
    (home / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputExistsError, match="no run.json.*refusing to empty it, even with --overwrite"):
        make_run_dir(home, "x", overwrite=True)
    assert (home / "holiday.jpg").read_bytes() == b"jpeg"


# Every command with an output folder refuses a finished run's folder before any slow step: exit 2, one
# line naming --out and --overwrite, no traceback, the old files untouched.
CLIS = {
    "eapnet.train": ["--model", "standard", "--steps", "1"],
    "compress.qat": ["--target-maccs", "100G"],
    "compress.sweep": ["--budgets", "100G"],
    "eapnet.evaluate": ["--models", "standard"],
    "eapnet.ablate": [],
    "eapnet.smoke": [],
    "mobile_export.check_parity": ["missing.pte"],
    "bench.bench_mobile": [],
}


@pytest.mark.parametrize("module", list(CLIS))
def test_every_cli_refuses_to_overwrite_a_finished_run(module, tmp_path, capsys):
    import importlib

    run = _finished_run(tmp_path / "run")
    main = importlib.import_module(module).main
    try:
        rc = main([*CLIS[module], "--out", str(run)])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"--out {run} already holds files" in err and "--overwrite" in err, err
    if module == "eapnet.train":
        assert f"--resume {run} to continue it" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err   # one line: the error
    assert (run / "model.pt").read_bytes() == b"weights of a finished run"
    assert sorted(p.name for p in run.iterdir()) == ["model.pt", "run.json", "sub"]


@pytest.mark.parametrize("module, name", [
    ("mobile_export.export_pte", "standard_xnnpack_fp32_32x32.pte"),
    ("mobile_export.export_coreml", "standard_coreml_fp16_32x32.mlpackage"),
])
def test_exporters_share_a_folder_but_never_replace_an_artifact(module, name, tmp_path, capsys):
    # an artifact folder collects several exports; only the same artifact again is refused
    import importlib

    out = tmp_path / "export"
    out.mkdir()
    (out / "other_artifact.pte").write_bytes(b"kept")
    (out / name).mkdir() if name.endswith(".mlpackage") else (out / name).write_bytes(b"an earlier export")
    try:
        rc = importlib.import_module(module).main(["--model", "standard", "--size", "32x32", "--out", str(out)])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and f"already holds {name}; pass --overwrite" in err and "Traceback" not in err, err
    assert (out / "other_artifact.pte").read_bytes() == b"kept"


@pytest.mark.parametrize("module, args", [("mobile_export.check_parity", ["missing.pte"]),
                                          ("eapnet.evaluate", ["--models", "standard"])])
def test_an_uncreatable_out_fails_before_the_work(module, args, tmp_path, capsys):
    # once only found after the whole comparison, and then the report was lost
    import importlib

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main([*args, "--out", str(blocker / "report")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out {blocker / 'report'}: cannot create the folder" in err, err
