"""What a person sees: one-line errors (eapnet.cli.command), quiet third-party noise (eapnet.console)."""
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from eapnet import console
from eapnet.cli import Parser, command

ROOT = Path(__file__).resolve().parents[1]


def test_known_third_party_messages_are_hidden_and_nothing_else(caplog):
    console.install(verbose=False)
    log = logging.getLogger("coremltools")
    with caplog.at_level(logging.WARNING):
        log.warning("scikit-learn version %s is not supported. Minimum required version: 0.17.", "1.9.1")
        log.warning("Failed to load _MLModelProxy: No module named 'coremltools.libcoremlpython'")
        log.warning("conversion failed for op foo")              # not a known message: shown
        logging.getLogger("torchao").warning("Failed to load /x/_C_mxfp8.so: boom")
        logging.getLogger("torchao").warning("Failed to load /x/_C_other.so: boom")   # not known: shown
    assert [r.getMessage() for r in caplog.records] == ["conversion failed for op foo",
                                                        "Failed to load /x/_C_other.so: boom"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        console.install(verbose=False)      # filterwarnings entries go first again
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_importing_the_stack_is_quiet():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EAPNET_VERBOSE": "0"}
    done = subprocess.run([sys.executable, "-c", "import eapnet, torchao, coremltools"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr[-2000:]


def test_verbose_is_asked_by_flag_or_environment(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eapnet-compress", "--target-maccs", "100G"])
    monkeypatch.delenv("EAPNET_VERBOSE", raising=False)
    assert not console.verbose_requested()
    monkeypatch.setattr(sys, "argv", ["eapnet-compress", "--verbose"])
    assert console.verbose_requested()
    monkeypatch.setattr(sys, "argv", ["eapnet-compress"])
    monkeypatch.setenv("EAPNET_VERBOSE", "1")
    assert console.verbose_requested()


@command
def _main(argv):
    p = Parser(prog="demo")
    p.add_argument("--what", default="ok")
    args = p.parse_args(argv)
    if args.what == "value":
        raise ValueError("--model x.pt: holds NaN weights")
    if args.what == "bug":
        raise RuntimeError("a bug deep inside\nsecond line")
    if args.what == "ctrl-c":
        raise KeyboardInterrupt
    return 0


@pytest.mark.parametrize("what, code, line", [
    ("value", 2, "error: --model x.pt: holds NaN weights"),
    ("bug", 1, "error: RuntimeError: a bug deep inside (--debug shows the traceback)"),
    ("ctrl-c", 130, "interrupted"),
])
def test_errors_are_one_line_with_an_exit_code(what, code, line, capsys):
    assert _main(["--what", what]) == code
    err = capsys.readouterr().err
    assert err.strip() == line


def test_debug_shows_the_traceback_and_usage_errors_are_one_line(capsys):
    with pytest.raises(RuntimeError, match="a bug deep inside"):
        _main(["--what", "bug", "--debug"])
    with pytest.raises(SystemExit) as e:
        _main(["--nope"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "demo: error: unrecognized arguments: --nope"


def test_native_stderr_hides_known_lines_and_passes_the_rest_on(capfd):
    with console.native_stderr(verbose=False):
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"E 00:00:00 method.cpp:42] Missing operator: aten::foo\n")
    with console.native_stderr(verbose=True):
        os.write(2, b"[cpuinfo_utils.cpp:87] shown when verbose\n")
    err = capfd.readouterr().err
    assert "image_version" not in err
    assert "Missing operator: aten::foo" in err and "shown when verbose" in err


def test_opening_a_pte_prints_nothing(tmp_path):
    """The runtime's five cpuinfo lines per load are hidden: a real load in a fresh process."""
    code = ("import torch\nfrom torch import nn\n"
            "from executorch.exir import to_edge_transform_and_lower\n"
            "from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner\n"
            "from eapnet.export.executorch_export import load_pte\n"
            "import sys\n"
            "ep = torch.export.export(nn.Conv2d(3, 3, 3).eval(), (torch.rand(1, 3, 8, 8),))\n"
            "prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()\n"
            f"open({str(tmp_path / 'c.pte')!r}, 'wb').write(prog.buffer)\n"
            "sys.stderr.flush()\n"
            "print('---', file=sys.stderr, flush=True)\n"
            f"load_pte({str(tmp_path / 'c.pte')!r})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "EAPNET_VERBOSE": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    after_load = done.stderr.split("---", 1)[1]
    assert "cpuinfo" not in after_load, after_load
