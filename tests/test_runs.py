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
    run = make_run_dir(tmp_path / "r", "x", tool="eapnet-x")
    rec = json.loads(record_run(run, {"target": "100G"}).read_text())
    assert rec["tool"] == "eapnet-x"                      # the command that claimed the folder
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
    d = make_run_dir(None, "smoke", root=tmp_path, tool="eapnet-smoke")
    assert d.is_dir() and d.name.startswith("smoke-")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        make_run_dir(f, "x", tool="eapnet-x")


def _finished_run(folder, tool="eapnet-x"):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"tool": tool, "args": {}}))
    (folder / "model.pt").write_bytes(b"weights of a finished run")
    (folder / "sub").mkdir()
    (folder / "sub" / "x.txt").write_text("x")
    return folder


def test_make_run_dir_refuses_a_folder_with_files_unless_overwrite(tmp_path):
    run = _finished_run(tmp_path / "run")
    with pytest.raises(OutputExistsError, match=r"--out .*run already holds files.*--overwrite"):
        make_run_dir(run, "x", tool="eapnet-x")
    with pytest.raises(OutputExistsError, match="--resume R to continue it"):
        make_run_dir(run, "x", tool="eapnet-x", resume_hint="--resume R to continue it")
    assert (run / "model.pt").read_bytes() == b"weights of a finished run"   # nothing touched
    assert make_run_dir(run, "x", tool="eapnet-x", overwrite=True) == run
    assert list(run.iterdir()) == []                                          # no file of the old run survives
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_run_dir(empty, "x", tool="eapnet-x") == empty                 # an empty folder is fine


def test_overwrite_never_empties_a_folder_this_tool_did_not_write(tmp_path):
    home = tmp_path / "photos"
    home.mkdir()
    (home / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputExistsError, match="no run.json.*refusing to empty it, even with --overwrite"):
        make_run_dir(home, "x", tool="eapnet-x", overwrite=True)
    assert (home / "holiday.jpg").read_bytes() == b"jpeg"


# Every command with an output folder refuses a finished run's folder before any slow step: exit 2, one
# line naming --out and --overwrite, no traceback, the old files untouched.
CLIS = {
    "eapnet.train": ["--model", "standard", "--steps", "1"],
    "eapnet.jobs.qat": ["--target-maccs", "100G"],
    "eapnet.jobs.sweep": ["--budgets", "100G"],
    "eapnet.evaluate": ["--models", "standard"],
    "eapnet.ablate": [],
    "eapnet.smoke": [],
    "eapnet.export.check_parity": ["{pte}"],   # an artifact outside --out (tmp_path/x.pte)
    "eapnet.bench.bench_mobile": [],
}


@pytest.mark.parametrize("module", list(CLIS))
def test_every_cli_refuses_to_overwrite_a_finished_run(module, tmp_path, capsys):
    import importlib

    run = _finished_run(tmp_path / "run")
    (tmp_path / "x.pte").write_bytes(b"pte")
    main = importlib.import_module(module).main
    try:
        rc = main([*(a.format(pte=tmp_path / "x.pte") for a in CLIS[module]), "--out", str(run)])
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
    ("eapnet.export.export_pte", "standard_xnnpack_fp32_32x32.pte"),
    ("eapnet.export.export_coreml", "standard_coreml_fp16_32x32.mlpackage"),
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


@pytest.mark.parametrize("module, args", [("eapnet.export.check_parity", ["{pte}"]),
                                          ("eapnet.evaluate", ["--models", "standard"])])
def test_an_uncreatable_out_fails_before_the_work(module, args, tmp_path, capsys):
    # once only found after the whole comparison, and then the report was lost
    import importlib

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "x.pte").write_bytes(b"pte")
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main([*(a.format(pte=tmp_path / "x.pte") for a in args), "--out",
                                              str(blocker / "report")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out {blocker / 'report'}: cannot create the folder" in err, err


# --overwrite replaces a run folder only of the command that wrote it, never one holding the call's inputs;
# the folders below are laid out as the commands lay them out (make_run_dir + record_run, then their files).
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _compress_run(folder):
    """A finished eapnet-compress folder: its run.json, the compressed model, the int8 program, export/, parity/."""
    run = make_run_dir(folder, "compress", tool="eapnet-compress")
    record_run(run, {"target_maccs": 100e9})
    for name, data in {"compressed.pt": b"weights", "int8.pt2": b"program", "report.json": b"{}",
                       "export/standard_xnnpack_int8_32x32.pte": b"pte", "parity/parity.json": b"{}"}.items():
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(data)
    return run


def _contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _exit_code(main, argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


EVAL_BASELINES = ["--models", "--baselines", "reference_frame", "--heldout", "1", "--size", "16", "--no-real-crops",
                  "--no-save-outputs", "--quiet"]


def test_overwrite_replaces_only_a_run_folder_of_the_same_command(tmp_path, capsys):
    from eapnet.evaluate import main as evaluate

    compressed = _compress_run(tmp_path / "compress")
    assert json.loads((compressed / "run.json").read_text())["tool"] == "eapnet-compress"
    before = _contents(compressed)
    assert _exit_code(evaluate, [*EVAL_BASELINES, "--out", str(compressed), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"--out {compressed} is a run folder of eapnet-compress, not of eapnet-evaluate" in err, err
    assert "remove it by hand" in err and len(err.strip().splitlines()) == 1, err
    assert _contents(compressed) == before                                   # nothing of the run was touched
    # an evaluation folder is replaced by the next evaluation, with none of its old files left
    ev = tmp_path / "eval"
    assert _exit_code(evaluate, [*EVAL_BASELINES, "--out", str(ev)]) == 0
    assert json.loads((ev / "run.json").read_text())["tool"] == "eapnet-evaluate"
    (ev / "old_output.exr").write_bytes(b"from the first evaluation")
    assert _exit_code(evaluate, [*EVAL_BASELINES, "--out", str(ev), "--overwrite"]) == 0
    assert not (ev / "old_output.exr").exists() and (ev / "report.json").is_file()


def test_parity_never_empties_the_folder_holding_the_artifact_it_checks(tmp_path, capsys):
    from eapnet.export.check_parity import main as parity

    run = _compress_run(tmp_path / "run")
    before = _contents(run)
    pte = run / "export" / "standard_xnnpack_int8_32x32.pte"
    for extra in ([], ["--overwrite"]):
        assert _exit_code(parity, [str(pte), "--out", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert f"--out {run} holds {pte}, an input of this command" in err and "even with --overwrite" in err, err
    assert _contents(run) == before
    # the parity folder of the same artifact is another matter: a parity run, replaced by the next one
    from eapnet.runs import check_run_dir

    own = make_run_dir(tmp_path / "parity", "parity", tool="eapnet-parity")
    record_run(own, {})
    (own / "parity.json").write_text("{}")
    assert check_run_dir(own, tool="eapnet-parity", overwrite=True, inputs=[str(pte)]) is True
    with pytest.raises(OutputExistsError, match="a run folder of eapnet-parity, not of eapnet-compress"):
        check_run_dir(own, tool="eapnet-compress", overwrite=True)


def test_overwrite_refuses_a_run_folder_that_names_no_tool(tmp_path):
    old = _finished_run(tmp_path / "old")
    (old / "run.json").write_text('{"args": {}}')           # run.json as written before it named its command
    with pytest.raises(OutputExistsError, match="does not say which tool wrote it; refusing to replace it, even "
                                                "with --overwrite: remove it by hand"):
        make_run_dir(old, "x", tool="eapnet-x", overwrite=True)
    assert (old / "model.pt").read_bytes() == b"weights of a finished run"


def _hold_in_another_process(folder):
    """A process that claims ``folder`` as eapnet-compress and sleeps: a run in progress."""
    import subprocess
    import sys

    code = ("import sys, time; from eapnet.runs import make_run_dir; "
            "make_run_dir(sys.argv[1], 'x', tool='eapnet-compress'); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_in_use_is_refused_until_its_job_ends(tmp_path):
    from eapnet.runs import check_run_dir

    run = tmp_path / "run"
    proc = _hold_in_another_process(run)
    try:
        (run / "compressed.pt").write_bytes(b"being written")
        for overwrite in (False, True):
            with pytest.raises(OutputExistsError, match=rf"--out {run} is in use by a running job \(pid {proc.pid}\)"):
                make_run_dir(run, "x", tool="eapnet-compress", overwrite=overwrite)
            with pytest.raises(OutputExistsError, match="in use by a running job"):
                check_run_dir(run, tool="eapnet-compress", overwrite=overwrite)
        assert (run / "compressed.pt").read_bytes() == b"being written"
    finally:
        proc.kill()                                          # kill -9: the kernel drops the lock with the process
        proc.wait()
    (run / "run.json").write_text(json.dumps({"tool": "eapnet-compress"}))
    assert make_run_dir(run, "x", tool="eapnet-compress", overwrite=True) == run and list(run.iterdir()) == []


def test_compress_holds_its_folder_for_the_whole_run(tmp_path, monkeypatch):
    # a second compress/qat.py --out D --overwrite, started while the first one works in D, neither empties
    # D nor writes into it
    import os
    import subprocess
    import sys

    import eapnet.jobs.qat as qat_cli
    from eapnet.jobs.qat import main as qat

    run, seen = tmp_path / "run", {}

    def working(cfg, run_dir, **kw):
        (run_dir / "compressed.pt").write_bytes(b"half-way")
        seen["second"] = subprocess.run([sys.executable, "-m", "eapnet.jobs.qat", "--target-maccs", "100G", "--out",
                                         str(run), "--overwrite", "--quiet"], cwd=ROOT, capture_output=True,
                                        text=True, timeout=120)
        seen["left"] = sorted(p.name for p in run_dir.iterdir())
        raise RuntimeError("stop here")

    monkeypatch.setattr(qat_cli, "compress_and_ship", working)
    assert qat(["--target-maccs", "100G", "--out", str(run), "--quiet"]) == 1     # the fake job's RuntimeError
    second = seen["second"]
    assert second.returncode == 2, second.stderr
    assert f"--out {run} is in use by a running job (pid {os.getpid()})" in second.stderr, second.stderr
    assert seen["left"] == ["compressed.pt", "run.json"]
    assert (run / "compressed.pt").read_bytes() == b"half-way"


def test_a_folder_holding_only_run_json_is_reused_without_overwrite(tmp_path):
    stopped = make_run_dir(tmp_path / "stopped", "x", tool="eapnet-train")
    record_run(stopped, {"steps": 1})                     # a run that failed before its first output
    assert make_run_dir(stopped, "x", tool="eapnet-compress") == stopped
    assert list(stopped.iterdir()) == []                  # its run.json goes; the new run records its own
    # with an input inside it, it is still refused
    stopped.joinpath("run.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="an input of this command"):
        make_run_dir(stopped, "x", tool="eapnet-compress", inputs=[stopped / "run.json"])


def _nan_checkpoint(tmp_path):
    import torch
    from conftest import TINY

    import eapnet
    from eapnet.checkpoint import save_checkpoint

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY.to_dict()))
    model = eapnet.build_model(TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", model, step=1, train_config={}, with_rng=False)
    return ["--model", str(cfg), "--init-from", str(tmp_path / "nan.pt"), "--steps", "1", "--batch-size", "1",
            "--patch", "32", "--val-scenes", "1", "--val-size", "32", "--val-every", "0", "--threads", "1"]


@pytest.mark.parametrize("case", ["train-nan-init-from", "compress-bad-data", "compress-zero-byte-model",
                                  "bench-text-file"])
def test_a_command_that_fails_early_can_be_run_again(case, tmp_path, capsys):
    # the rerun meets the same error again, not a refusal of the folder the first try left (run.json at most)
    if case == "train-nan-init-from":
        from eapnet.train import main
        argv, message = _nan_checkpoint(tmp_path), "checkpoint weights hold NaN/inf values"
    elif case == "compress-bad-data":
        from eapnet.jobs.qat import main
        from eapnet.data import write_ntire
        from eapnet.data.synthetic import generate_scene

        ldrs, evs, gt = generate_scene(1, 32, 32)
        for sid in ("0000", "0001"):
            write_ntire(tmp_path / "data", sid, ldrs, evs, gt)
        (tmp_path / "data" / "0001_long.png").unlink()
        argv = ["--target-maccs", "1G", "--model", "lightweight", "--size", "64x96", "--data", str(tmp_path / "data"),
                "--calib-scenes", "1", "--quiet"]
        message = "0001: incomplete NTIRE sample, missing 0001_long.png"
    elif case == "compress-zero-byte-model":
        from eapnet.jobs.qat import main
        (tmp_path / "empty.pt").write_bytes(b"")
        argv, message = ["--target-maccs", "1G", "--model", str(tmp_path / "empty.pt"), "--quiet"], \
            "empty.pt is not a readable checkpoint"
    else:
        from eapnet.bench.bench_mobile import main
        (tmp_path / "notes.txt").write_text("not a model\n")
        argv, message = ["--models", str(tmp_path / "notes.txt"), "--sizes", "32x32", "--runs", "1"], "notes.txt"
    out = tmp_path / "out"
    for _ in range(2):
        assert _exit_code(main, [*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "already holds files" not in err, err
    assert not out.exists() or {p.name for p in out.iterdir()} <= {"run.json"}


def test_a_folder_reclaimed_in_one_process_records_the_newer_tool(tmp_path):
    out = tmp_path / "run"
    make_run_dir(out, "x", tool="eapnet-evaluate")
    record_run(out, {})                       # failed before its first output: only run.json
    make_run_dir(out, "x", tool="eapnet-compress")
    record_run(out, {})
    assert json.loads((out / "run.json").read_text())["tool"] == "eapnet-compress"


def test_auto_named_folders_of_one_second_do_not_collide(tmp_path, monkeypatch):
    import datetime as dt

    from eapnet import runs

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(runs._dt, "datetime", Frozen)
    a = runs.make_run_dir(None, "eval", root=tmp_path, tool="eapnet-evaluate")
    b = runs.make_run_dir(None, "eval", root=tmp_path, tool="eapnet-evaluate")
    assert (a.name, b.name) == ("eval-20260102-030405", "eval-20260102-030405-2")
