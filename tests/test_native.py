"""The native runner (``eapnet/export/runner``, :mod:`eapnet.export.native`): built here, it runs tiny EAPNet
programs exactly as ExecuTorch's Python runtime does (whole frame; tiled, stitched bit for bit as
``eapnet.inference.predict``; the app convention on 8-bit PPM and PNG frames), writes NTIRE outputs that the
project's reader takes back, and refuses bad inputs with one line on stderr and exit status 2.

Slow (``-m slow``): the runner cross-built for aarch64, run under QEMU for each CPU family of
:data:`eapnet.export.native.CPUS`, fp32 and int8 programs, against the x86 runner.

Cost: two fp32 lowerings of a tiny model at 32x48 (~20 s each, shared by the test workers through a file
lock) and the host build (~10 s from scratch, seconds when up to date); the slow test adds an int8 lowering
(~30 s), the aarch64 build (~10 s) and about 20 QEMU runs (~1.5 s each)."""
import fcntl
import json
import subprocess

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY
from executorch.runtime import Runtime
from torch import nn

from eapnet.data.ntire import read_ntire, write_ntire, write_ntire_hdr
from eapnet.inference import _starts, example_inputs, predict
from eapnet.model import EAPNet
from eapnet.export import executorch_export as ee
from eapnet.export import native
from eapnet.export.common import ProgramModule, Source, export_fixed

SIZE = (32, 48)                           # the programs' fixed size (H, W)
FRAME = (2 * 32 + 5, 2 * 48 + 7)          # a larger frame: 3 x 3 tiles with an odd remainder on each side
EVS = np.array([-2.0, 0.0, 2.0], np.float32)


def _model() -> EAPNet:
    torch.manual_seed(0)
    m = EAPNet(TINY).eval()
    # the output conv is zero-initialised (the output would be the radiance merge alone): small random weights
    nn.init.normal_(m.out.weight, std=0.05)
    nn.init.normal_(m.out.bias, std=0.01)
    return m


def _scene(size, seed=0) -> np.ndarray:
    """Float frames (3, H, W, 3) in [0, 1], with black and saturated rows (the model's log and pow edge cases)."""
    x = np.random.default_rng(seed).random((3, *size, 3), dtype=np.float32)
    x[:, :3] = 0.0
    x[:, -3:] = 1.0
    return x


def _codes(size, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, *size, 3), dtype=np.uint8)


def _shared(tmp_path_factory, name: str, make):
    """``make(path)`` once for all test workers (pytest-xdist): the file in the run's shared temp folder,
    built under a lock by the first worker that needs it."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if root.name.startswith("popen-gw") else root
    path = root / "native-programs" / name
    path.parent.mkdir(exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            make(path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
    return path


def _lower(module, io: str = "float"):
    def make(path):
        with open(path, "wb") as f:
            ee.lower(export_fixed(module, SIZE, io=io)).to_executorch().write_to_file(f)
    return make


@pytest.fixture(scope="module")
def runner():
    return native.build_runner("host")


@pytest.fixture(scope="module")
def float_pte(tmp_path_factory):
    return _shared(tmp_path_factory, "tiny_float.pte", _lower(_model()))


@pytest.fixture(scope="module")
def app_pte(tmp_path_factory):
    return _shared(tmp_path_factory, "tiny_app.pte", _lower(_model(), io="app"))


def _python_app(pte):
    """The app program in ExecuTorch's Python runtime behind the float call signature (for ``predict``): frames
    of 8-bit codes / 255 in, the program's own uint8 input, (1, 3, H, W) out."""
    method = Runtime.get().load_program(str(pte)).load_method("forward")

    def run(ldrs, evs):
        frames = (ldrs[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return method.execute((frames, evs.reshape(3).contiguous()))[0].permute(2, 0, 1)[None]
    return run


def _cli(runner, *args):
    return subprocess.run([str(runner), *map(str, args)], capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------------------------


def test_runner_builds_and_reads_the_programs(runner, float_pte, app_pte):
    assert runner.is_file() and runner == native.runner_path("host")
    assert native.program_info(float_pte) == {"program": list(SIZE), "io": "float"}
    assert native.program_info(app_pte) == {"program": list(SIZE), "io": "app"}
    assert native.build_runner("host") == runner          # up to date: nothing to do, same binary


def test_whole_frame_float_program_equals_the_python_runtime(float_pte):
    ldrs = _scene(SIZE)
    hdr, stats = native.run_native(float_pte, ldrs, EVS, repeat=3, threads=1)
    want = predict(ProgramModule(ee.load_pte(float_pte)), ldrs, EVS)   # whole frame: one forward
    assert hdr.shape == (*SIZE, 3) and hdr.dtype == np.float32
    assert np.array_equal(hdr, want)
    assert stats["program"] == list(SIZE) and stats["frame"] == list(SIZE) and stats["io"] == "float"
    assert stats["tiles"] == 1 and stats["threads"] == 1 and len(stats["latency_ms"]) == 2
    assert stats["median_ms"] > 0 and stats["first_ms"] > 0 and stats["load_ms"] > 0
    assert 1 < stats["peak_rss_mb"] < 2000 and stats["target"] == "host"


@pytest.mark.parametrize("frame, overlap", [(FRAME, 0), (FRAME, 8), (FRAME, 15), ((SIZE[0], 103), 8)])
def test_tiled_float_program_equals_predict_bit_for_bit(float_pte, frame, overlap):
    ldrs = _scene(frame, seed=1)
    hdr, stats = native.run_native(float_pte, ldrs, EVS, tile_overlap=overlap)
    want = predict(ProgramModule(ee.load_pte(float_pte)), ldrs, EVS, tile=SIZE, overlap=overlap)
    assert np.array_equal(hdr, want), np.abs(hdr - want).max()
    tiles = len(_starts(frame[0], SIZE[0], overlap)) * len(_starts(frame[1], SIZE[1], overlap))
    assert stats["tiles"] == tiles >= 3 and stats["frame"] == list(frame) and stats["overlap"] == overlap


def test_app_program_on_8bit_frames_equals_the_python_runtime(app_pte, float_pte, runner, tmp_path):
    run = _python_app(app_pte)
    codes = _codes(SIZE, seed=2)
    hdr, stats = native.run_native(app_pte, codes, EVS, u8=True)        # PPM frames
    ldrs = (codes / 255).astype(np.float32)
    want = predict(ProgramModule(run), ldrs, EVS)
    assert stats["io"] == "app" and np.array_equal(hdr, want)
    assert np.array_equal(native.run_native(app_pte, ldrs, EVS)[0], want)   # exact codes / 255 as floats
    with pytest.raises(ValueError, match="8-bit frames"):
        native.run_native(app_pte, _scene(SIZE), EVS)                       # not codes

    # tiled, cut from the uint8 frames
    codes = _codes(FRAME, seed=3)
    hdr, stats = native.run_native(app_pte, codes, EVS, u8=True, tile_overlap=8)
    want = predict(ProgramModule(run), (codes / 255).astype(np.float32), EVS, tile=SIZE, overlap=8)
    assert stats["tiles"] == 9 and np.array_equal(hdr, want)

    # a float program fed 8-bit frames sees code * float32(1/255), as AppIO computes
    hdr, _ = native.run_native(float_pte, codes, EVS, u8=True, tile_overlap=8)
    ldrs = codes.astype(np.float32) * np.float32(1 / 255)
    assert np.array_equal(hdr, predict(ProgramModule(ee.load_pte(float_pte)), ldrs, EVS, tile=SIZE, overlap=8))

    # PNG frames as the NTIRE files hold them (OpenCV: compressed, filtered rows) and raw RGB bytes (--size) are
    # the same codes
    hdr, _ = native.run_native(app_pte, codes, EVS, u8=True, tile_overlap=8)
    write_ntire(tmp_path, "s", (codes / 255).astype(np.float32), [-2, 0, 2])
    pngs = [tmp_path / f"s_{n}.png" for n in ("short", "medium", "long")]
    raws = [tmp_path / f"{n}.rgb" for n in ("short", "medium", "long")]
    for path, frame in zip(raws, codes):
        path.write_bytes(frame.tobytes())
    for frames in (pngs, [*raws, "--size", f"{FRAME[0]}x{FRAME[1]}"]):
        done = _cli(runner, app_pte, "--frames", *frames, "--evs", -2, 0, 2, "--overlap", 8, "--out-f32",
                    tmp_path / "out.f32", "--overwrite")
        assert done.returncode == 0, done.stderr
        assert np.array_equal(np.fromfile(tmp_path / "out.f32", np.float32).reshape(*FRAME, 3), hdr)


def test_ntire_outputs_read_back_within_16bit_quantisation(runner, float_pte, tmp_path):
    ldrs = _scene(FRAME, seed=4)
    np.ascontiguousarray(ldrs.transpose(0, 3, 1, 2)).tofile(tmp_path / "ldrs.f32")
    outs = {"f32": tmp_path / "hdr.f32", "png": tmp_path / "hdr.png", "align": tmp_path / "hdr_alignratio.npy"}
    done = _cli(runner, float_pte, "--ldrs-f32", tmp_path / "ldrs.f32", "--size", f"{FRAME[0]}x{FRAME[1]}",
                "--evs", -2, 0, 2, "--overlap", 8, "--out-f32", outs["f32"], "--out-png", outs["png"],
                "--out-align", outs["align"])
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.splitlines()[-1])
    assert stats["tiles"] == 9 and done.stderr == ""
    hdr = np.fromfile(outs["f32"], np.float32).reshape(*FRAME, 3)
    assert np.array_equal(hdr, predict(ProgramModule(ee.load_pte(float_pte)), ldrs, EVS, tile=SIZE, overlap=8))

    # the project's writer of the same HDR: identical pixels and a byte-identical align ratio file
    write_ntire_hdr(tmp_path / "ref", "hdr", hdr)
    assert np.array_equal(cv2.imread(str(outs["png"]), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(tmp_path / "ref" / "hdr.png"), cv2.IMREAD_UNCHANGED))
    assert outs["align"].read_bytes() == (tmp_path / "ref" / "hdr_alignratio.npy").read_bytes()

    # the NTIRE reader's ground-truth convention: gt = png / align, within half a 16-bit step of the HDR
    write_ntire(tmp_path / "sample", "s", ldrs, [-2, 0, 2])
    (tmp_path / "sample" / "s_gt.png").write_bytes(outs["png"].read_bytes())
    (tmp_path / "sample" / "s_alignratio.npy").write_bytes(outs["align"].read_bytes())
    _, _, gt = read_ntire(tmp_path / "sample", "s")
    align = float(np.load(outs["align"]))
    assert align == 65535 / float(hdr.max())
    assert np.abs(gt - hdr).max() <= 0.5 / align * (1 + 1e-6)


def _bad_cases(tmp, pte, app):
    """(arguments, text the one stderr line must hold) per bad input."""
    H, W = SIZE
    frame = tmp / "f.ppm"
    frame.write_bytes(b"P6\n%d %d\n255\n" % (W, H) + bytes(H * W * 3))
    small = tmp / "small.ppm"
    small.write_bytes(b"P6\n24 16\n255\n" + bytes(16 * 24 * 3))
    other = tmp / "other.ppm"
    other.write_bytes(b"P6\n%d %d\n255\n" % (W + 2, H) + bytes(H * (W + 2) * 3))
    raw = tmp / "raw.rgb"
    raw.write_bytes(bytes(H * W * 3 - 1))
    cut = tmp / "cut.ppm"
    cut.write_bytes(b"P6\n%d %d\n255\n" % (W, H) + bytes(100))
    exists = tmp / "exists.f32"
    exists.write_bytes(b"")
    ev = ["--evs", -2, 0, 2]
    f3 = ["--frames", frame, frame, frame]
    return [
        ([pte, "--frames", raw, raw, raw, "--size", f"{H}x{W}", *ev], f"{raw}: a raw {H}x{W} RGB frame"),
        ([pte, "--frames", frame, other, frame, *ev], f"{other}: the medium frame is {H}x{W + 2}"),
        ([pte, "--frames", cut, cut, cut, *ev], f"{cut}: the {H}x{W} PPM needs"),
        ([pte, "--frames", tmp / "missing.ppm", frame, frame, *ev], f"{tmp / 'missing.ppm'}: cannot open"),
        ([pte, "--frames", small, small, small, *ev], f"the frame (16x24, HxW) is smaller than the program's {H}x{W}"),
        ([pte, *f3, "--evs", 0, 0, 2], "--evs 0 0 2: not strictly increasing"),
        ([pte, *f3, "--evs", -2, 0, "x"], "--evs x: not a finite number"),
        ([pte, *f3, *ev, "--out-f32", exists], f"{exists}: the output exists (pass --overwrite"),
        ([pte, *f3, *ev, "--out-png", tmp / "no" / "x.png"], "does not exist or is not writable"),
        ([pte, *f3, *ev, "--overlap", 16, "--size", f"{H}x{W}"], None),   # whole frame: overlap unused, runs
        ([pte, "--ldrs-f32", raw, "--size", f"{H}x{W}", *ev], f"{raw}: expected {9 * H * W} float32 values"),
        ([app, "--ldrs-f32", tmp / "ldrs.f32", "--size", f"{H}x{W}", *ev], "takes 8-bit frames"),
        ([raw, *f3, *ev], f"{raw}: not an ExecuTorch program"),
        ([pte, *f3, *ev, "--threads", 0], "--threads 0: expected an integer"),
        ([pte, *f3, *ev, "--frobnicate"], "--frobnicate: unknown option"),
        ([pte, *f3], "--evs A B C is required"),
    ]


def test_bad_inputs_exit_2_with_one_line(runner, float_pte, app_pte, tmp_path):
    np.zeros(9 * SIZE[0] * SIZE[1], np.float32).tofile(tmp_path / "ldrs.f32")
    for args, text in _bad_cases(tmp_path, float_pte, app_pte):
        done = _cli(runner, *args)
        if text is None:
            assert done.returncode == 0, done.stderr
            continue
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and text in lines[0], (args, done.returncode, done.stderr)
        assert done.stdout == ""
    # tiling with an overlap of half a tile side or more
    big = tmp_path / "big.ppm"
    big.write_bytes(b"P6\n%d %d\n255\n" % (FRAME[1], FRAME[0]) + bytes(FRAME[0] * FRAME[1] * 3))
    done = _cli(runner, float_pte, "--frames", big, big, big, "--evs", -2, 0, 2)   # default overlap 64
    assert done.returncode == 2 and "overlap 64 is outside [0, 16) for 32x48 tiles" in done.stderr
    # and through the Python wrapper: the runner's line in a RunnerError
    with pytest.raises(native.RunnerError, match="overlap 64 is outside") as e:
        native.run_native(float_pte, _scene(FRAME), EVS)
    assert e.value.returncode == 2


def test_cpu_flags_keep_sme_off_an_old_qemu():
    assert [native.cpu_flag(c, (10, 0, 13)) for c in native.CPUS] == [(c, None) for c in native.CPUS]
    flag, note = native.cpu_flag("max", (7, 2))
    assert flag == "max,sme=off" and "QEMU 7.2" in note and "not covered" in note
    assert native.cpu_flag("neoverse-n2", (7, 2)) == ("neoverse-n2", None)
    with pytest.raises(ValueError, match="cpu must be one of"):
        native.cpu_flag("cortex-x4", (10, 0))


# ------------------------------------------------------------------------------------------------------------


def _ptq(tmp_path_factory):
    """A tiny int8 program (post-training quantization on two batches of example inputs)."""
    def make(path):
        source = Source(_model(), "fp32", "tiny", "tiny", "")
        calib = [example_inputs(SIZE, batch=2, seed=s) for s in (1, 2)]
        _lower(ee.ptq_source(source, calib).module)(path)
    return _shared(tmp_path_factory, "tiny_int8.pte", make)


@pytest.mark.slow   # ~2 min on 2 cores: an int8 lowering, the aarch64 build, 4 CPUs x 3 runs under QEMU
def test_aarch64_runner_under_qemu_matches_x86(float_pte, tmp_path_factory):
    found = native.qemu()
    if found is None:
        pytest.skip("no QEMU user-mode emulator for aarch64: run scripts/setup_native.sh")
    try:
        native.build_runner("aarch64")
    except native.RunnerMissing as e:
        pytest.skip(f"{e} (scripts/setup_native.sh installs the cross compiler and the aarch64 runtime)")
    int8_pte = _ptq(tmp_path_factory)
    ldrs, codes = _scene(SIZE, seed=5), _scene(FRAME, seed=6)
    cases = {"fp32 whole": (float_pte, ldrs, {}), "fp32 tiled": (float_pte, codes, {"tile_overlap": 8}),
             "int8 whole": (int8_pte, ldrs, {})}
    x86 = {name: native.run_native(p, x, EVS, **kw)[0] for name, (p, x, kw) in cases.items()}
    # the x86 runner is the Python runtime, int8 too
    assert np.array_equal(x86["int8 whole"], predict(ProgramModule(ee.load_pte(int8_pte)), ldrs, EVS))
    report = {}
    for cpu in native.CPUS:
        for name, (p, x, kw) in cases.items():
            hdr, stats = native.run_native(p, x, EVS, target="aarch64", cpu=cpu, **kw)
            report[f"{cpu} {name}"] = float(np.abs(hdr.astype(np.float64) - x86[name]).max())
            if stats["note"]:
                report[f"{cpu} note"] = stats["note"]
    print("max |aarch64 - x86| per CPU:", json.dumps(report, indent=1))
    assert all(v <= 1e-5 for v in report.values() if isinstance(v, float)), report
