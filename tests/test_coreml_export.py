"""Core ML export (eapnet.export.coreml_export; its CLI eapnet.export.export_coreml): names, shapes, metadata,
the manifest beside each package, the app convention's image inputs, atomic writes, CLI errors.

Numerical checks of the packages (reference-executed with eapnet.export.mil_interp) are in test_mil_interp.py;
the w8a8 and shipped-model conversions are slow (the Core ML quantizer takes ~1 min to prepare).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY

from eapnet.checkpoint import save_checkpoint
from eapnet.macs import count_maccs, count_params
from eapnet.model import EAPNet
from eapnet.export import coreml_export as cx
from eapnet.export import export_coreml as coreml_cli
from eapnet.export.backends import artifact_sha256, open_artifact
from eapnet.export.common import AppIO, Source, app_example_inputs, file_sha256, load_source
from eapnet.export.manifest import interface, manifest_path, read_manifest
from eapnet.export.mil_interp import SUPPORTED_OPS, load_program, program_ops, run_mlpackage
from test_mil_interp import FP16_MAX, FP16_MEAN

ct = pytest.importorskip("coremltools")
# coremltools 9.0 warns about its own op registry on every converted op
pytestmark = pytest.mark.filterwarnings("ignore:Function _TORCH_OPS_REGISTRY:DeprecationWarning")

TINY_LIGHT = TINY.replace(base="merge")   # lightweight-shaped: full-resolution alignment, bilinear upsampling
SIZE = (32, 48)


def _tiny_model(cfg=TINY_LIGHT) -> EAPNet:
    torch.manual_seed(0)
    model = EAPNet(cfg).eval()
    torch.nn.init.normal_(model.out.weight, std=0.05)   # zero-initialised: the network would add nothing
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, _tiny_model())
    return path


@pytest.fixture(scope="module")
def cli_run(ckpt, tmp_path_factory):
    """The CLI's fp16 export of the tiny checkpoint: (run folder, package path)."""
    out = tmp_path_factory.mktemp("cli")
    assert coreml_cli.main(["--source", str(ckpt), "--precision", "fp16", "--size", "32x48", "--out", str(out)]) == 0
    return out, out / "tiny_coreml_fp16_32x48.mlpackage"


def _no_temp_dirs(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_cli_writes_named_package_and_run_record(cli_run):
    out, path = cli_run
    assert path.is_dir() and (path / "Manifest.json").is_file()
    record = path.with_suffix(".run.json")        # one record per artifact: a folder collects several
    manifest = manifest_path(path)
    assert sorted(p.name for p in out.iterdir()) == sorted([path.name, manifest.name, record.name])   # no temp
    run = json.loads(record.read_text())
    assert run["args"]["precision"] == "fp16" and run["args"]["size"] == [32, 48]


def test_inputs_and_output_names_shapes_dtypes(cli_run):
    _, path = cli_run
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 8   # iOS 17
    ins = {i.name: (list(i.type.multiArrayType.shape), i.type.multiArrayType.dataType) for i in spec.description.input}
    outs = {o.name: (list(o.type.multiArrayType.shape), o.type.multiArrayType.dataType)
            for o in spec.description.output}
    f32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert ins == {"ldrs": ([1, 3, 3, 32, 48], f32), "evs": ([1, 3], f32)}
    assert outs == {"hdr": ([1, 3, 32, 48], f32)}


def test_metadata_names_the_source(cli_run, ckpt):
    _, path = cli_run
    meta = cx.read_metadata(path)
    model = _tiny_model()
    assert meta["variant"] == "tiny" and meta["precision"] == "fp16" and meta["size"] == "32x48"
    assert meta["maccs"] == str(count_maccs(model)) and meta["maccs_at"] == "1060x1900"
    assert meta["params"] == str(count_params(model))
    assert meta["source_sha256"] == file_sha256(ckpt) and meta["source"] == "tiny.pt"
    assert meta["parity"] == "pending"
    assert meta["artifact_sha256"] == artifact_sha256(path)      # the package's own content hash


def test_manifest_describes_the_package(cli_run, ckpt):
    _, path = cli_run
    m = read_manifest(path)                       # validated
    assert m["artifact"] == {"file": path.name, "backend": "coreml", "precision": "fp16",
                             "sha256": artifact_sha256(path), "bytes": m["artifact"]["bytes"]}
    assert m["io"] == "float" and m["program_size"] == [32, 48]
    assert m["source"]["file"] == "tiny.pt" and m["source"]["sha256"] == file_sha256(ckpt)
    assert m["runtime"]["coremltools"] == ct.__version__ and m["runtime"]["minimum_deployment_target"] == "iOS17"
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert [(i.name, list(i.type.multiArrayType.shape)) for i in spec.description.input] == \
        [(i["name"], i["shape"]) for i in m["inputs"]]
    assert list(spec.description.output[0].type.multiArrayType.shape) == m["output"]["shape"]


def test_app_package_takes_images(ckpt, tmp_path):
    # The app convention through the CLI: three RGB images and evs (3,) in, (H, W, 3) float32 out; the
    # reference execution of the fp16 package on 8-bit frames against the float model on the same frames.
    assert coreml_cli.main(["--source", str(ckpt), "--io", "app", "--size", "32x48", "--out", str(tmp_path)]) == 0
    path = tmp_path / "tiny_app_coreml_fp16_32x48.mlpackage"
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    rgb = ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    f32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    images = {i.name: (i.type.imageType.height, i.type.imageType.width, i.type.imageType.colorSpace)
              for i in spec.description.input if i.type.WhichOneof("Type") == "imageType"}
    assert images == {n: (32, 48, rgb) for n in ("short", "medium", "long")}
    assert [i.name for i in spec.description.input] == ["short", "medium", "long", "evs"]
    evs_type = spec.description.input[3].type.multiArrayType
    assert (list(evs_type.shape), evs_type.dataType) == ([3], f32)
    out = spec.description.output[0].type.multiArrayType
    assert (list(out.shape), out.dataType) == ([32, 48, 3], f32)
    m = read_manifest(path)
    assert m["io"] == "app" and cx.read_metadata(path)["io"] == "app"
    assert m["inputs"] == interface("app", (32, 48), "coreml")[0]
    assert set(program_ops(path)) <= SUPPORTED_OPS

    frames, evs = app_example_inputs((32, 48), seed=3)
    with torch.no_grad():
        want = AppIO(_tiny_model())(frames, evs).numpy()
    program = load_program(path)
    got = program.run({"short": frames[0].numpy(), "medium": frames[1].numpy(), "long": frames[2].numpy(),
                       "evs": evs.numpy()})["hdr"]
    err = np.abs(got - want)
    assert got.shape == (32, 48, 3) and err.max() < FP16_MAX and err.mean() < FP16_MEAN, (err.max(), err.mean())
    # what Core ML hands the program for an image: its codes as a (1, 3, H, W) float32 tensor
    planes = {n: frames[k].permute(2, 0, 1)[None].float().numpy() for k, n in enumerate(("short", "medium", "long"))}
    assert np.array_equal(program.run({**planes, "evs": evs.numpy()})["hdr"], got)
    # opened as an artifact it takes the float convention, as the parity harness feeds every artifact
    art = open_artifact(path)
    assert art.stamp == "verified" and art.size == (32, 48)
    ldrs = frames.permute(0, 3, 1, 2)[None].float() / 255
    assert np.array_equal(art(ldrs, evs[None])[0].permute(1, 2, 0).numpy(), got)


def test_set_metadata_rewrites_only_the_spec(cli_run, tmp_path):
    _, original = cli_run
    path = tmp_path / original.name
    shutil.copytree(original, path)
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    content = artifact_sha256(path)
    meta = cx.set_metadata(path, parity={"max_abs": 1e-3, "device": "reference"}, note="x")
    assert artifact_sha256(path) == content        # metadata (where the stamps live) is outside the hash
    assert json.loads(meta["parity"]) == {"device": "reference", "max_abs": 1e-3}
    assert cx.read_metadata(path)["note"] == "x"
    assert "note" not in cx.set_metadata(path, note=None)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    assert not _no_temp_dirs(path / "Data" / "com.apple.CoreML") and not _no_temp_dirs(tmp_path)
    assert ct.models.MLModel(str(path), skip_model_load=True).user_defined_metadata["variant"] == "tiny"
    with pytest.raises(FileNotFoundError, match="not an .mlpackage"):
        cx.set_metadata(tmp_path / "missing.mlpackage", parity="x")
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
    weights.write_bytes(bytes(data))
    assert artifact_sha256(path) != content        # but the weights are in


def test_int8_weights_package(ckpt, tmp_path):
    path = cx.export_mlpackage(ckpt, tmp_path, precision="int8w", size=SIZE)
    assert path.name == "tiny_coreml_int8w_32x48.mlpackage"
    ops = program_ops(path)
    model = _tiny_model()
    n_weights = sum(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) for m in model.modules())
    assert ops["constexpr_affine_dequantize"] == n_weights   # every conv weight, the small depthwise ones too
    assert set(ops) <= SUPPORTED_OPS
    assert cx.read_metadata(path)["precision"] == "int8w"
    ldrs, evs = torch.rand(1, 3, 3, *SIZE), torch.tensor([[-1.0, 0.0, 1.0]])
    with torch.no_grad():
        want = model(ldrs, evs).numpy()
    got = run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"]
    assert np.abs(got - want).max() < 2e-2


def test_consistent_base_converts_and_matches(tmp_path):
    # The de-ghosting base of the shipped models: its ops convert (an int scalar in clamp_min once failed
    # coremltools' dtype check) and the fp16 package computes what the eager model does.
    model = _tiny_model(TINY.replace(base="consistent"))
    path = cx.export_mlpackage(Source(model, "fp32", "tiny-consistent", "x", "0"), tmp_path, size=SIZE)
    assert set(program_ops(path)) <= SUPPORTED_OPS
    ldrs, evs = torch.rand(1, 3, 3, *SIZE), torch.tensor([[-1.0, 0.0, 1.0]])
    with torch.no_grad():
        want = model(ldrs, evs).numpy()
    err = np.abs(run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"] - want)
    # fp16 rounding moves the base's steep ramps (the clipping test, 1e4 per unit) across their knee at a
    # pixel or two of these random frames: measured mean 2.2e-4, 99.9th percentile 2.1e-3, max 0.037
    assert err.mean() < 1e-3 and np.quantile(err, 0.999) < 1e-2 and err.max() < 0.1, (err.mean(), err.max())


def test_failed_conversion_writes_nothing(ckpt, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(cx, "_convert", boom)
    with pytest.raises(RuntimeError, match="conversion failed"):
        cx.export_mlpackage(ckpt, tmp_path / "out", size=SIZE)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _FakeModel:
    """Stands in for an MLModel: ``save`` writes a package folder, optionally failing half-way."""

    def __init__(self, tag: str, fail: bool = False):
        self.tag, self.fail = tag, fail

    def save(self, path):
        (p := Path(path)).mkdir()
        (p / "Manifest.json").write_text(self.tag)
        if self.fail:
            raise OSError("disk full")


def test_atomic_save_replaces_or_leaves_the_old_package(tmp_path, monkeypatch):
    # the fake packages hold no spec to hash and stamp: this test is about the replacement only
    monkeypatch.setattr(cx, "package_sha256", lambda path: "0" * 64)
    monkeypatch.setattr(cx, "set_metadata", lambda path, **kw: None)
    target = tmp_path / "m.mlpackage"
    with pytest.raises(OSError, match="disk full"):
        cx._save_atomic(_FakeModel("a", fail=True), target)
    assert list(tmp_path.iterdir()) == []                      # no partial package, no temporary folder
    cx._save_atomic(_FakeModel("a"), target)
    cx._save_atomic(_FakeModel("b"), target)                   # overwrite an existing package (a folder)
    assert (target / "Manifest.json").read_text() == "b"
    with pytest.raises(OSError):
        cx._save_atomic(_FakeModel("c", fail=True), target)
    assert (target / "Manifest.json").read_text() == "b"       # the previous package survives a failure
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


def test_api_rejects_bad_requests(ckpt, tmp_path):
    src = load_source(ckpt)
    with pytest.raises(ValueError, match="precision must be one of"):
        cx.export_mlpackage(src, tmp_path, precision="fp8", size=SIZE)
    with pytest.raises(ValueError, match="at least 16"):
        cx.export_mlpackage(src, tmp_path, size=(8, 48))
    with pytest.raises(ValueError, match=r"io must be one of \('float', 'app'\), got 'web'"):
        cx.export_mlpackage(src, tmp_path, size=SIZE, io="web")
    int8 = Source(torch.nn.Identity(), "int8", "x", "x.pt2", "0", quant_backend="xnnpack")
    with pytest.raises(ValueError, match="w8a8 only"):
        cx.export_mlpackage(int8, tmp_path, precision="fp16", size=SIZE)
    with pytest.raises(ValueError, match="Core ML one"):
        cx.export_mlpackage(int8, tmp_path, precision="w8a8", size=SIZE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--source", "nonexistent"], "neither one of"),
    (["--source", "standard", "--precision", "fp8"], "invalid choice"),
    (["--source", "standard", "--size", "8x8"], "at least 16x16"),
    (["--source", "standard", "--size", "big"], "HxW"),
    (["--source", "standard", "--io", "web"], "argument --io: invalid choice: 'web'"),
    (["--source", "standard", "--calib-scenes", "0"], "argument --calib-scenes: expected an integer >= 1"),
    (["--precision", "fp16"], "--source"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        coreml_cli.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_calib_scenes_where_no_ptq_runs(tmp_path, capsys):
    q = tmp_path / "q.pt2"
    q.write_bytes(b"")        # refused before it is loaded
    for argv, why in [(["--source", "standard", "--calib-scenes", "4"], "give --precision w8a8 too, or drop it"),
                      (["--source", str(q), "--calib-scenes", "4"], f"--model {q} is already int8")]:
        with pytest.raises(SystemExit) as e:
            coreml_cli.main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert e.value.code == 2, err
        assert err == ("eapnet-export-coreml: error: --calib-scenes sets the scenes of w8a8 PTQ of a float source: "
                       f"{why}\n")
    assert not (tmp_path / "out").exists()


def test_cli_int8_source_needs_w8a8(tmp_path, capsys):
    (tmp_path / "q.pt2").write_bytes(b"")
    with pytest.raises(SystemExit):
        coreml_cli.main(["--source", str(tmp_path / "q.pt2"), "--precision", "int8w", "--out", str(tmp_path)])
    assert "only --precision w8a8" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # w8a8 by default for a .pt2: an unreadable one is named
        coreml_cli.main(["--source", str(tmp_path / "q.pt2"), "--out", str(tmp_path)])
    assert "q.pt2" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ slow


def _calib(n=2, size=(32, 32)):
    g = torch.Generator().manual_seed(3)
    return [(torch.rand(1, 3, 3, *size, generator=g), torch.tensor([[-2.0, 0.0, 2.0]])) for _ in range(n)]


@pytest.mark.slow  # the Core ML quantizer traces ~400 pattern graphs: ~1.5 min per prepare on 2 busy cores
def test_w8a8_from_coreml_int8_program(tmp_path):
    from eapnet.compress.quantize import convert, load_quantized, prepare_ptq, save_quantized

    from eapnet.training import pytorch_default_init

    model = _tiny_model(TINY.replace(align="half", attention="half", upsample="conv", base="merge"))
    # The bounds below are measured with PyTorch's default conv init, as in tests/test_quantize.py: an untrained
    # tiny net with the model's He init amplifies random features, and its int8 error with them (mean 0.015
    # against its Q/DQ program, the size of the quantization error itself).
    torch.manual_seed(0)
    pytorch_default_init(model)
    model.out.reset_parameters()
    q = convert(prepare_ptq(model, "coreml", _calib()))
    pt2 = save_quantized(tmp_path / "q.pt2", q, None, {"config": model.config.to_dict(), "backend": "coreml",
                                                      "maccs": count_maccs(model), "params": count_params(model)})
    path = cx.export_mlpackage(pt2, tmp_path, size=(30, 45), precision="w8a8")
    ops = program_ops(path)
    assert ops["quantize"] > 0 and ops["dequantize"] > 0 and ops["constexpr_affine_dequantize"] > 0
    assert set(ops) <= SUPPORTED_OPS
    meta = cx.read_metadata(path)
    assert meta["precision"] == "w8a8" and meta["source_precision"] == "int8"
    assert meta["source_sha256"] == file_sha256(pt2)
    int8, _ = load_quantized(pt2)
    ldrs, evs = _calib(1, (30, 45))[0]
    with torch.no_grad():
        want, flt = int8(ldrs, evs).numpy(), model(ldrs, evs).numpy()
    got = run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"]
    # The package computes in fp16 between its int8 steps (the PT2E model in float32): fp16 storage error as
    # in the fp16 tests (measured mean 2.5e-4 here), plus values that cross a rounding boundary and move one
    # int8 step (scales ~0.03) in a few pixels.
    err = np.abs(got - want)
    assert err.mean() < 2e-3 and err.max() < 5e-2, (err.mean(), err.max())
    assert np.abs(got - flt).mean() < 2e-2
    # The same Q/DQ program with float32 compute follows PyTorch closely. What is left is rounding ties: the
    # Core ML quantizer requantizes some tensors to exactly twice their scale, so half of those values sit on
    # a tie, which MIL's round(x / s) and PyTorch's round(x * (1 / s)) can break differently (one int8 step).
    fp32 = tmp_path / "fp32.mlpackage"
    cx._convert(cx._coreml_program(int8, (30, 45)), (30, 45), ct.precision.FLOAT32).save(str(fp32))
    err32 = np.abs(run_mlpackage(fp32, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"] - want)
    assert err32.mean() < 5e-4 and err32.max() < 5e-3, (err32.mean(), err32.max())


@pytest.mark.slow
def test_w8a8_from_float_source_calibrates(ckpt, tmp_path):
    path = cx.export_mlpackage(ckpt, tmp_path, precision="w8a8", size=SIZE, calib=_calib())
    ops = program_ops(path)
    assert ops["quantize"] > 0 and ops["constexpr_affine_dequantize"] > 0
    assert "2 batches" in cx.read_metadata(path)["quantization"]
    ldrs, evs = _calib(1, SIZE)[0]
    with torch.no_grad():
        want = _tiny_model()(ldrs, evs).numpy()
    got = run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"]
    assert np.abs(got - want).mean() < 2e-2


@pytest.mark.slow  # ~10 s conversion + ~1 s reference execution of the 198 GMAcc model at 128x192
def test_shipped_standard_fp16(tmp_path):
    src = load_source("standard")
    path = cx.export_mlpackage(src, tmp_path, precision="fp16", size=(128, 192))
    assert set(program_ops(path)) <= SUPPORTED_OPS
    g = torch.Generator().manual_seed(0)
    ldrs, evs = torch.rand(1, 3, 3, 128, 192, generator=g), torch.tensor([[-2.0, 0.0, 2.0]])
    with torch.no_grad():
        want = src.module(ldrs, evs).numpy()
    err = np.abs(run_mlpackage(path, {"ldrs": ldrs.numpy(), "evs": evs.numpy()})["hdr"] - want)
    # The consistent-merge base's clipping test is a ramp 1e-4 wide at 0.97, below fp16's resolution there
    # (4.9e-4): where the medium frame's brightest channel falls in it, fp16 decides "clipped" otherwise and
    # the base takes or rejects the brighter side frame (measured on these random frames: 0.16 % of the
    # values more than 0.02 off, max 0.72; mean 6.2e-4). The rest follows float to fp16 rounding.
    assert err.mean() < 1e-3 and (err > 2e-2).mean() < 5e-3, (err.mean(), (err > 2e-2).mean())


@pytest.mark.parametrize("kind", ["link_out", "device", "huge"])
def test_a_package_leading_outside_itself_is_refused_before_reading(tmp_path, kind, monkeypatch):
    """A weight file linked to a file outside the package (or to /dev/zero: an endless read) is never read."""
    pkg = tmp_path / "evil.mlpackage"
    weights = pkg / "Data" / "com.apple.CoreML" / "weights"
    weights.mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    if kind == "link_out":
        secret = tmp_path / "secret.txt"
        secret.write_text("not yours")
        (weights / "weight.bin").symlink_to(secret)
        words = r"weight\.bin is a link or special file"
    elif kind == "device":
        (weights / "weight.bin").symlink_to("/dev/zero")
        words = r"weight\.bin is a link or special file"
    else:
        (weights / "weight.bin").write_bytes(b"\0" * 2048)
        monkeypatch.setattr(cx, "MAX_PACKAGE_BYTES", 1024)
        words = "more than the 0 GiB"
    with pytest.raises(ValueError, match=rf"evil\.mlpackage: refused: .*{words}"):
        cx.read_metadata(pkg)
    with pytest.raises(ValueError, match="refused"):
        artifact_sha256(pkg)
