"""The artifact manifest (eapnet.export.manifest): schema, validator, files, parity updates, and the input/output
tables against what the export really traces. Fake artifacts (small files): no conversion runs here."""
from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest
import torch
from conftest import TINY

from eapnet.inference import TILE_OVERLAP
from eapnet.model import EAPNet
from eapnet.export import manifest as mf
from eapnet.export.common import IO, Source, export_fixed

SIZE = (32, 48)
SOURCE = Source(torch.nn.Identity(), "fp32", "tiny", "/somewhere/tiny.pt", "ab" * 32, {"name": "tiny"}, 1234, 56)
COREML_RUNTIME = {"coremltools": "9.0", "minimum_deployment_target": "iOS17", "compute_units": "all"}
CASES = [(backend, io) for backend in mf.BACKENDS for io in IO]


def _fake_sha(path):
    return hashlib.sha256(str(sorted(p.name for p in path.rglob("*"))).encode()).hexdigest()


@pytest.fixture
def artifact(tmp_path, monkeypatch):
    """``make(backend, io) -> (path, manifest)``: a small file (or folder) standing in for the artifact."""
    def make(backend="executorch-xnnpack", io="float", precision=None):
        if backend == "coreml":
            path = tmp_path / f"tiny_coreml_fp16_{SIZE[0]}x{SIZE[1]}.mlpackage"
            (path / "Data").mkdir(parents=True, exist_ok=True)
            (path / "Manifest.json").write_text("{}")
            (path / "Data" / "weight.bin").write_bytes(b"\0" * 100)
            # no real spec to hash: the content hash of a folder of names stands in for package_sha256
            monkeypatch.setattr(mf, "artifact_sha256", _fake_sha)
            runtime = COREML_RUNTIME
        else:
            path = tmp_path / f"tiny_xnnpack_fp32_{SIZE[0]}x{SIZE[1]}.pte"
            path.write_bytes(b"a fake program")
            runtime = mf.executorch_runtime(version="1.5.1")
        precision = precision or ("fp16" if backend == "coreml" else "fp32")
        return path, mf.build_manifest(path, backend=backend, precision=precision, io=io, size=SIZE, source=SOURCE,
                                       runtime=runtime)
    return make


def _machine(**kw):
    return {"arch": "x86_64", "cpu": "AMD EPYC (AVX-512 VNNI)", "executor": "ExecuTorch Python runtime",
            "max_abs_vs_reference": 1e-6, "passed": True, **kw}


def _parity(**kw):
    return {"passed": True, "measured": "2026-11-22", "reference": {"path": "tiny.pt", "sha256": "ab" * 32},
            "reference_is_export_source": True, "worst_psnr_mu_vs_float": 61.2, "gt_drop": {"ntire": 0.01},
            "machines": [_machine(), _machine(arch="aarch64", cpu="cortex-a76 (QEMU 10.0 user mode)",
                                              executor="native runner")], "notes": [], **kw}


# ------------------------------------------------------------------------------------------ valid manifests


@pytest.mark.parametrize("backend, io", CASES)
def test_built_manifest_validates_and_round_trips(artifact, backend, io):
    path, m = artifact(backend, io)
    assert mf.validate(m) == []
    assert m["schema"] == mf.SCHEMA_ID and m["io"] == io and m["program_size"] == list(SIZE)
    assert m["artifact"] == {"file": path.name, "backend": backend, "precision": m["artifact"]["precision"],
                             "sha256": mf.artifact_sha256(path), "bytes": m["artifact"]["bytes"]}
    assert m["artifact"]["bytes"] == (path.stat().st_size if path.is_file() else 102)
    assert m["source"] == {"file": "tiny.pt", "sha256": "ab" * 32, "variant": "tiny", "config": "tiny",
                           "precision": "fp32", "maccs": 1234, "maccs_at": "1060x1900", "params": 56}
    assert m["tiling"]["tile"] == list(SIZE) and m["tiling"]["overlap"] == 12   # 64 px do not fit 32 px tiles
    evs = next(i for i in m["inputs"] if i["name"] == "evs")
    assert "-2, 0, 2" in evs["ev_semantics"]
    assert "log2((t_i * gain_i) / (t_medium * gain_medium))" in evs["ev_semantics"]
    assert m["output"]["domain"]["gamma"] == 2.24 and m["output"]["domain"]["tonemap"]["mu"] == 5000
    written = mf.write_manifest(path, m)
    assert written == path.with_suffix(".manifest.json") == mf.manifest_path(path)
    assert mf.read_manifest(path) == m == mf.read_manifest(written)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]      # no temporary file left


def test_app_inputs_bind_per_backend_with_one_meaning():
    et_in, et_out = mf.interface("app", SIZE, "executorch-xnnpack")
    cm_in, cm_out = mf.interface("app", SIZE, "coreml")
    assert [i["name"] for i in et_in] == ["frames", "evs"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in cm_in] == [
        ("short", "uint8", [32, 48, 3]), ("medium", "uint8", [32, 48, 3]), ("long", "uint8", [32, 48, 3]),
        ("evs", "float32", [3])]
    assert all(i["image"]["color_layout"] == "RGB" and i["image"]["scale"] == 1 / 255 for i in cm_in[:3])
    assert et_in[-1] == cm_in[-1] and et_out == cm_out                             # evs and output: one entry
    assert mf.interface("float", SIZE, "coreml") == mf.interface("float", SIZE, "xnnpack")


def test_default_overlap():
    assert mf.default_overlap((1060, 1900)) == TILE_OVERLAP
    assert mf.default_overlap((128, 1900)) == 60 and mf.default_overlap((16, 16)) == 4


def test_tables_are_what_the_export_traces():
    # one test for both conventions: torch.export's first call in a process pays ~4 s of set-up
    model = EAPNet(TINY)
    for io in IO:
        ep = export_fixed(model, SIZE, io)
        nodes = {n.name: n for n in ep.graph.nodes}
        vals = [nodes[name].meta["val"] for name in ep.graph_signature.user_inputs]
        traced = [(name, str(v.dtype).removeprefix("torch."), list(v.shape))
                  for name, v in zip(ep.graph_signature.user_inputs, vals, strict=True)]
        (out_name,) = ep.graph_signature.user_outputs
        out = nodes[out_name].meta["val"]
        inputs, output = mf.interface(io, SIZE, "executorch-xnnpack")
        assert [(i["name"], i["dtype"], i["shape"]) for i in inputs] == traced, io
        assert (output["dtype"], output["shape"]) == (str(out.dtype).removeprefix("torch."), list(out.shape)), io
        assert [len(i["layout"].split(",")) for i in inputs] == [len(i["shape"]) for i in inputs]
        assert len(output["layout"].split(",")) == len(output["shape"])


# ------------------------------------------------------------------------------------------ invalid manifests


def _required_paths(schema, value, path=""):
    """Every required field path of ``value`` under ``schema`` (objects and the first item of arrays)."""
    if isinstance(value, dict) and isinstance(schema, dict):
        for key in schema.get("required", []):
            yield f"{path}.{key}" if path else key
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                yield from _required_paths(sub, value[key], f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value and "items" in schema:
        yield from _required_paths(schema["items"], value[0], f"{path}[0]")


def _delete(m, path):
    *parents, last = re.sub(r"\[(\d+)\]", r".\1", path).split(".")
    node = m
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    del node[last]


@pytest.mark.parametrize("backend, io", CASES)
def test_each_missing_required_field_is_named(artifact, backend, io):
    _, m = artifact(backend, io)
    m["parity"] = _parity()
    paths = list(_required_paths(mf.SCHEMA, m))
    runtime = ["executorch", "min_runtime", "delegate", "libraries"] if backend != "coreml" else \
        ["coremltools", "minimum_deployment_target", "compute_units"]
    paths += [f"runtime.{k}" for k in runtime] + ["inputs[1].ev_semantics" if io == "float" else
                                                  f"inputs[{3 if backend == 'coreml' else 1}].ev_semantics"]
    if backend == "coreml" and io == "app":
        paths.append("inputs[0].image")
    assert len(paths) > 50 and "output.domain.tonemap.mu" in paths and "parity.machines[0].cpu" in paths
    for path in paths:
        bad = copy.deepcopy(m)
        _delete(bad, path)
        errors = mf.validate(bad)
        assert f"{path}: required field missing" in "\n".join(errors), (path, errors)


@pytest.mark.parametrize("path, value, message", [
    ("artifact.bytes", "12", "artifact.bytes: expected an integer, got string"),
    ("artifact.bytes", True, "artifact.bytes: expected an integer, got boolean"),
    ("artifact.sha256", "XYZ", "artifact.sha256: 'XYZ' does not match"),
    ("artifact.file", "dir/x.pte", "artifact.file: 'dir/x.pte' does not match"),
    ("program_size", "32x48", "program_size: expected an array, got string"),
    ("inputs", {}, "inputs: expected an array, got object"),
    ("inputs.0.shape", [3, "32", 48, 3], "inputs[0].shape[1]: expected an integer, got string"),
    ("inputs.0.range", [0], "inputs[0].range: expected 2 items, got 1"),
    ("output.domain.gamma", float("nan"), "output.domain.gamma: nan is not a finite number"),
    ("tiling.overlap", -1, "tiling.overlap: -1 is below the minimum 0"),
    ("source.maccs", 1.5, "source.maccs: expected an integer or null, got number"),
    ("runtime.libraries", [], "runtime.libraries: expected at least 1 items, got 0"),
    ("runtime", [], "runtime: expected an object, got array"),
    ("schema", "eapnet-artifact-manifest/2", "schema: must be 'eapnet-artifact-manifest/1'"),
])
def test_wrong_types_are_named(artifact, path, value, message):
    _, m = artifact()
    node, *keys = path.split(".")
    target = m
    for k in [node, *keys][:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    last = [node, *keys][-1]
    target[int(last) if last.isdigit() else last] = value
    errors = mf.validate(m)
    assert any(e.startswith(message) for e in errors), errors


@pytest.mark.parametrize("change, message", [
    (lambda m: m["artifact"].update(backend="tflite"), "artifact.backend: 'tflite' is not one of"),
    (lambda m: m["artifact"].update(precision="fp16"), "artifact.precision: 'fp16' is not one of ['fp32', 'int8']"),
    (lambda m: m.update(io="web"), "io: 'web' is not one of ['float', 'app']"),
    (lambda m: m["inputs"][0].update(dtype="int64"), "inputs[0].dtype: 'int64' is not one of"),
    (lambda m: m["source"].update(precision="fp16"), "source.precision: 'fp16' is not one of ['fp32', 'int8']"),
    (lambda m: m["runtime"].update(delegate="Vulkan"), "runtime.delegate: must be 'XNNPACK', got 'Vulkan'"),
    (lambda m: m["artifact"].update(file="x.mlpackage"), r"artifact.file: 'x.mlpackage' does not match \.pte$"),
    (lambda m: m.update(parity=_parity(machines=[_machine(arch="riscv64")])),
     "parity.machines[0].arch: 'riscv64' is not one of ['x86_64', 'aarch64']"),
])
def test_wrong_enums_are_named(artifact, change, message):
    _, m = artifact()
    change(m)
    assert message in "\n".join(mf.validate(m))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(program_size=[32]), "program_size: expected 2 items, got 1"),
    (lambda m: m.update(program_size=[32, 48, 1]), "program_size: expected 2 items, got 3"),
    (lambda m: m["inputs"][0].update(shape=[3, 32, 48]),
     "inputs[0].shape: the 'app' convention on executorch-xnnpack at 32x48 wants [3, 32, 48, 3], got [3, 32, 48]"),
    (lambda m: m["output"].update(shape=[48, 32, 3]), "output.shape: the 'app' convention on"),
    (lambda m: m["tiling"].update(tile=[32, 48, 1]), "tiling.tile: expected 2 items, got 3"),
    (lambda m: m["tiling"].update(tile=[16, 16]), "tiling.tile: [16, 16] must be the program size [32, 48]"),
    (lambda m: m["tiling"].update(overlap=16), "tiling.overlap: 16 px must be below half the tile's shorter side"),
    (lambda m: m["inputs"].pop(), "inputs: expected 2 to 4 items, got 1"),
    (lambda m: m["inputs"][0].update(name="ldrs"), "inputs[0].name: the 'app' convention on"),
    (lambda m: m["artifact"].update(colour="red"), "artifact.colour: unknown field"),
    (lambda m: m.update(parity=_parity(artifact_sha256="cd" * 32)), "parity.artifact_sha256: measured on another"),
])
def test_shapes_and_consistency_are_named(artifact, change, message):
    _, m = artifact(io="app")
    change(m)
    assert message in "\n".join(mf.validate(m))


def test_not_an_object_and_missing_top_level():
    assert mf.validate([]) == ["(manifest): expected an object, got array"]
    errors = mf.validate({"schema": mf.SCHEMA_ID})
    assert "artifact: required field missing" in errors and "runtime: required field missing" in errors


def test_schema_uses_only_what_the_validator_implements():
    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("type"), str | list) or "properties" in node or "const" in node or "enum" in node:
                assert set(node) <= mf._KEYWORDS, sorted(set(node) - mf._KEYWORDS)
            for key, value in node.items():
                if key == "properties":
                    for sub in value.values():
                        walk(sub)
                elif key not in ("enum", "const", "required"):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(mf.SCHEMA)


def test_shipped_schema_file_is_the_schema():
    assert json.loads(mf.SCHEMA_FILE.read_text()) == json.loads(json.dumps(mf.SCHEMA))


# ------------------------------------------------------------------------------------------ files


def test_write_refuses_an_invalid_manifest_and_writes_nothing(artifact):
    path, m = artifact()
    m["io"] = "web"
    with pytest.raises(ValueError, match=r"^tiny_xnnpack_fp32_32x48\.manifest\.json: not a valid "
                                         r"eapnet-artifact-manifest/1 manifest: io: 'web' is not one of"):
        mf.write_manifest(path, m)
    assert not mf.manifest_path(path).exists()


@pytest.mark.parametrize("content, message", [
    (b"{" * 10, "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b" " * (mf.MAX_MANIFEST_BYTES + 1), "refused: larger than 1 MiB"),
    (b'{"schema": "eapnet-artifact-manifest/1"}', "not a valid eapnet-artifact-manifest/1 manifest: artifact: "
                                                 "required field missing (and 7 more)"),
])
def test_read_refuses_what_is_not_a_manifest_in_one_line(artifact, content, message):
    path, _ = artifact()
    mf.manifest_path(path).write_bytes(content)
    with pytest.raises(ValueError) as e:
        mf.read_manifest(path)
    assert str(e.value).startswith(str(mf.manifest_path(path))) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_read_refuses_missing_and_special_files(artifact, tmp_path):
    path, _ = artifact()
    with pytest.raises(FileNotFoundError, match="no manifest at"):
        mf.read_manifest(path)
    mf.manifest_path(path).mkdir()
    with pytest.raises(ValueError, match="not a plain file"):
        mf.read_manifest(path)


def test_manifest_path():
    assert mf.manifest_path("runs/x/a_coreml_fp16_8x8.mlpackage").as_posix() == "runs/x/a_coreml_fp16_8x8.manifest.json"
    assert mf.manifest_path("a.b.pte").name == "a.b.manifest.json"
    with pytest.raises(ValueError, match=r"x\.onnx: not an artifact"):
        mf.manifest_path("x.onnx")


def test_build_rejects_bad_arguments(artifact, tmp_path):
    path, _ = artifact()
    kw = dict(precision="fp32", io="float", size=SIZE, source=SOURCE, runtime={})
    with pytest.raises(ValueError, match="backend must be one of"):
        mf.build_manifest(path, backend="tflite", **kw)
    with pytest.raises(ValueError, match="io must be one of"):
        mf.build_manifest(path, backend="xnnpack", **{**kw, "io": "web"})
    with pytest.raises(ValueError, match=r"size must be \(H, W\)"):
        mf.build_manifest(path, backend="xnnpack", **{**kw, "size": (32,)})
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        mf.build_manifest(tmp_path / "none.pte", backend="xnnpack", **kw)


def test_in_memory_source_records_no_file():
    m = mf._source(Source(torch.nn.Identity(), "fp32", "tiny", "mem", "0"))
    assert m["file"] is None and m["sha256"] is None and m["maccs"] is None


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("backend", list(mf.BACKENDS))
def test_set_parity_records_the_verdict(artifact, backend):
    path, m = artifact(backend)
    mf.write_manifest(path, m)
    updated = mf.set_parity(path, _parity(artifact_sha256=m["artifact"]["sha256"]))
    assert mf.read_manifest(path) == updated and updated["parity"]["machines"][1]["arch"] == "aarch64"
    assert {k: v for k, v in updated.items() if k != "parity"} == m


def test_set_parity_refuses_a_bad_record_or_another_file(artifact):
    path, m = artifact()
    mf.write_manifest(path, m)
    bad = _parity()
    del bad["machines"][0]["cpu"]
    with pytest.raises(ValueError, match=r"parity\.machines\[0\]\.cpu: required field missing"):
        mf.set_parity(path, bad)
    with pytest.raises(ValueError, match="parity.artifact_sha256: measured on another file"):
        mf.set_parity(path, _parity(artifact_sha256="cd" * 32))
    assert "parity" not in mf.read_manifest(path)                  # nothing written by the refusals
    path.write_bytes(b"another program")
    with pytest.raises(ValueError, match=r"describes another file .*: export it again"):
        mf.set_parity(path, _parity())
