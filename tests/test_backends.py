"""The backend table: every shipped artifact key maps to one backend and precision, every backend is a
quantizer flavour, its exporter and opener exist and take the arguments the pipeline and parity pass, and
anything else than our artifacts is refused with one clear error."""
import inspect

import pytest

from eapnet.compress.quantize import QUANT_BACKENDS
from eapnet.export import backends
from eapnet.export.backends import ARTIFACTS, BACKENDS, artifact_backend, open_artifact


def test_artifact_keys_map_to_backends():
    assert ARTIFACTS == ("pte-fp32", "pte-int8", "coreml-fp16", "coreml-w8a8")
    assert [artifact_backend(k)[1] for k in ARTIFACTS] == ["fp32", "int8", "fp16", "w8a8"]
    assert {artifact_backend(k)[0].name for k in ARTIFACTS} == set(BACKENDS)
    with pytest.raises(ValueError, match="unknown artifact 'pte-fp16'"):
        artifact_backend("pte-fp16")


def test_backends_are_quantizer_flavours_with_callable_entry_points():
    assert set(BACKENDS) == set(QUANT_BACKENDS)
    for b in BACKENDS.values():
        export = backends._function(b.exporter)
        opener = backends._function(b.opener)
        params = inspect.signature(export).parameters
        assert {"precision", "size"} <= set(params), b.exporter
        assert "threads" in inspect.signature(opener).parameters, b.opener
        # the precisions the main job ships are ones the exporter knows
        module = inspect.getmodule(export)
        assert set(b.shipped) <= set(module.PRECISIONS), (b.name, module.PRECISIONS)


def test_open_artifact_refuses_what_is_not_ours(tmp_path):
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        open_artifact(tmp_path / "missing.pte")
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"not an exported artifact \(want one of .pte, .mlpackage\)"):
        open_artifact(odd)
    pte = tmp_path / "x.pte"
    pte.write_bytes(b"not a program")
    with pytest.raises(ValueError, match="sidecar x.json"):
        open_artifact(pte)
