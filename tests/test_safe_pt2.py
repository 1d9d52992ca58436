"""A .pt2 from someone else never runs code when it is loaded: each crafted archive below is refused by
``eapnet.compress.quantize.load_quantized`` (and the commands that take ``--model x.pt2``) before its payload can
run. Two of them, a pickled weight and a guard, are first shown to run their payload under plain
``torch.export.load`` / the loaded program's first call: the routes are real, not hypothetical."""
import json
import pickle
import zipfile

import pytest
import torch
from torch import nn

from eapnet.compress import safe_pt2
from eapnet.compress.quantize import load_quantized, read_quantized_meta
from eapnet.export import export_pte

META = "eapnet_quant.json"


class _Net(nn.Module):
    """The float model's call signature, one conv: archives of the same layout as ours in a second."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(9, 3, 3, padding=1)

    def forward(self, ldrs, evs):
        return self.conv(ldrs.flatten(1, 2)) + evs.mean()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "clean.pt2"
    h = torch.export.Dim("h", min=8, max=64)
    ep = torch.export.export(_Net().eval(), (torch.rand(1, 3, 3, 16, 16), torch.zeros(1, 3)),
                             dynamic_shapes=({3: h}, None))
    torch.export.save(ep, path, extra_files={META: json.dumps({"config": {"name": "tiny"}})})
    return path


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for an attacker's ``os.system``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _rewrite(src, dst, edit):
    """Copy the archive ``src`` to ``dst``, passing each member through ``edit(name, bytes) -> bytes | None``
    (None drops it); ``edit`` may return a dict of further members to add."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            out = edit(info.filename, zin.read(info))
            if isinstance(out, dict):
                for name, data in out.items():
                    zout.writestr(name, data)
            elif out is not None:
                zout.writestr(info.filename, out)
    return dst


def _json_edit(suffix, change):
    def edit(name, data):
        if not name.endswith(suffix):
            return data
        doc = json.loads(data)
        change(doc)
        return json.dumps(doc).encode()
    return edit


def _pickled_weight(clean, tmp_path, marker):
    """The issue's case: one weight's ``use_pickle`` flipped and its payload replaced by a pickle."""
    def edit(name, data):
        if name.endswith("_weights_config.json"):
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            edit.target = first["path_name"]
            return json.dumps(doc).encode()
        return data

    edit.target = None
    mid = _rewrite(clean, tmp_path / "mid.pt2", edit)
    return _rewrite(mid, tmp_path / "evil.pt2",
                    lambda n, d: pickle.dumps(_Payload(marker)) if n.endswith("/weights/" + edit.target) else d)


def test_plain_torch_runs_the_payload_we_refuse(clean, tmp_path):
    marker = tmp_path / "ran"
    evil = _pickled_weight(clean, tmp_path, marker)
    try:
        torch.export.load(evil)
    except Exception:
        pass   # what torch makes of the payload's return value does not matter: it has run by then
    assert marker.exists(), "the crafted archive must run its payload under torch.export.load"
    marker.unlink()
    with pytest.raises(ValueError, match=r"evil\.pt2: refused: stores weight 'conv.weight' as a pickle"):
        load_quantized(evil)
    assert not marker.exists()


def test_clean_archive_loads_and_computes(clean):
    model, meta = load_quantized(clean)
    assert meta == {"config": {"name": "tiny"}}
    x, e = torch.rand(1, 3, 3, 24, 16), torch.zeros(1, 3)
    ref = torch.export.load(clean).module()(x, e)
    assert torch.equal(model(x, e), ref)


def _rename_input(doc, old, new):
    """Rename graph input ``old`` everywhere in the program's JSON (its placeholder and every use)."""
    def walk(o):
        if isinstance(o, dict):
            for k, v in list(o.items()):
                if v == old and k in ("name", "as_name", "user_input_name"):
                    o[k] = new
                else:
                    walk(v)
        elif isinstance(o, list):
            for i, v in enumerate(o):
                if v == old:
                    o[i] = new
                else:
                    walk(v)
    walk(doc)


def _first_expr(doc):
    """The first ``as_expr`` dict in the program's JSON (a symbolic size)."""
    stack = [doc]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if "expr_str" in o:
                return o
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    raise AssertionError("no symbolic expression in the program")


def _edits(marker):
    payload = pickle.dumps(_Payload(marker))
    return {
        "a pickled example input": (
            lambda n, d: payload if "/sample_inputs/" in n else d, "example inputs that safe loading refuses"),
        "a node calling torch.os.system": (
            _json_edit("models/model.json", lambda doc: doc["graph_module"]["graph"]["nodes"][0].update(
                target="torch.os.system")), "calls 'torch.os.system'"),
        "a guard that imports os": (
            _json_edit("models/model.json", lambda doc: doc["guards_code"].append(
                f"__import__('builtins').open('{marker}', 'w')")), "has a guard that is not a comparison"),
        "a shape expression that calls a function": (
            _json_edit("models/model.json", lambda doc: doc["range_constraints"].update(
                {f"__import__('os').system('touch {marker}')": {"min_val": 1, "max_val": 2}})),
            "range constraint that is not plain arithmetic"),
        "an input named with code": (
            _json_edit("models/model.json", lambda doc: _rename_input(doc, "evs", f"evs=open('{marker}', 'w')")),
            "that is not a Python identifier"),
        "a shape expression with a tower of powers": (
            _json_edit("models/model.json", lambda doc: _first_expr(doc).update(expr_str="9**9**9**9")),
            "has a shape expression that is not plain arithmetic"),
        "a tree spec with code in a key": (
            _json_edit("models/model.json", lambda doc: doc["graph_module"]["module_call_graph"][0]["signature"]
                       .update(in_spec=f'[1, {{"context": "[\\"x=open(\'{marker}\')\\"]"}}]')),
            "has an in_spec that is not a plain tree of names"),
        "a custom-object constant": (
            lambda n, d: {n: d, n.split("/", 1)[0] + "/data/constants/custom_obj_0": payload}
            if n.endswith("archive_format") else d, "custom_obj_0"),
        "a pickled constant in its config": (
            _json_edit("_constants_config.json", lambda doc: doc["config"].update(
                c={"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None})),
            "stores constant 'c' as a pickle"),
    }


@pytest.mark.parametrize("case", list(_edits("x")))
def test_crafted_archives_are_refused_before_anything_runs(clean, tmp_path, case):
    marker = tmp_path / "ran"
    edit, message = _edits(marker)[case]
    evil = _rewrite(clean, tmp_path / "evil.pt2", edit)
    with pytest.raises(safe_pt2.UnsafeProgramError, match="evil.pt2: refused: .*" + message.replace("(", r"\(")):
        load_quantized(evil)
    assert not marker.exists()


def test_guard_payload_runs_under_plain_torch(clean, tmp_path):
    """The guards become Python code that runs on every call of the program's module: a real path to code."""
    marker = tmp_path / "ran"
    edit, _ = _edits(marker)["a guard that imports os"]
    evil = _rewrite(clean, tmp_path / "evil.pt2", edit)
    try:
        torch.export.load(evil).module()(torch.rand(1, 3, 3, 16, 16), torch.zeros(1, 3))
    except Exception:
        pass
    assert marker.exists()


def test_damaged_files_give_one_line_and_no_traceback(clean, tmp_path, capfd):
    empty = tmp_path / "empty.pt2"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(clean.read_bytes()[: clean.stat().st_size // 2])
    for path in (empty, cut):
        with pytest.raises(ValueError, match=f"{path.name} is not a torch.export archive"):
            load_quantized(path)
    noquant = tmp_path / "noquant.pt2"
    _rewrite(clean, noquant, lambda n, d: None if n.endswith(META) else d)
    with pytest.raises(ValueError, match="has no eapnet_quant.json"):
        load_quantized(noquant)
    bad_graph = _rewrite(clean, tmp_path / "badgraph.pt2", lambda n, d: b"{}" if n.endswith("models/model.json") else d)
    with pytest.raises(ValueError, match="badgraph.pt2 is not a readable torch.export program"):
        load_quantized(bad_graph)
    assert "Traceback" not in capfd.readouterr().err


def test_oversized_archive_is_refused_before_reading(clean, monkeypatch):
    monkeypatch.setattr(safe_pt2, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(ValueError, match="unpacks to .* MiB, more than"):
        safe_pt2.check_archive(clean)


def test_export_command_refuses_the_crafted_file(clean, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = _pickled_weight(clean, tmp_path, marker)
    assert export_pte.main(["--model", str(evil), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "pickle" in err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_metadata_reader_never_unpickles(clean, tmp_path):
    marker = tmp_path / "ran"
    evil = _pickled_weight(clean, tmp_path, marker)
    assert read_quantized_meta(evil) == {"config": {"name": "tiny"}}
    assert not marker.exists()


def test_metadata_reader_refuses_an_oversized_member(clean, tmp_path):
    big = _rewrite(clean, tmp_path / "big.pt2",
                   lambda n, d: json.dumps({"pad": "x" * (2 << 20)}).encode() if n.endswith(META) else d)
    with pytest.raises(ValueError, match="big.pt2: its eapnet_quant.json is 2 MiB"):
        read_quantized_meta(big)


def test_guards_of_real_programs_are_accepted():
    """Guards as torch writes them for EAPNet's padded dynamic shapes (max, floor division, products)."""
    for guard in ["max(1, 2*(L['ldrs'].size()[4] // 2)) != (max(1, 2*(L['ldrs'].size()[3] // 2))*max(1, 2))",
                  "(((-1)*L['ldrs'].size()[3]) % 8) == 0", "L['evs'].size()[0] == L['ldrs'].size()[0]"]:
        safe_pt2._check_graph({"guards_code": [guard]}, "models/model.json")
    for guard in ["L['ldrs'].size()[3].__class__ == 0", "getattr(L, 'x') == 0", "open('/tmp/x') == 0"]:
        with pytest.raises(safe_pt2.UnsafeProgramError, match="guard"):
            safe_pt2._check_graph({"guards_code": [guard]}, "models/model.json")


def test_two_members_of_one_name_are_refused(clean, tmp_path):
    evil = _rewrite(clean, tmp_path / "evil.pt2", lambda n, d: d)
    with zipfile.ZipFile(evil) as z:
        graph = next(n for n in z.namelist() if n.endswith("models/model.json"))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(evil, "a") as z:
        z.writestr(graph, b"{}")   # a second graph: which one a reader takes depends on the reader
    with zipfile.ZipFile(evil) as z:
        assert len(z.namelist()) != len(set(z.namelist()))
    with pytest.raises(safe_pt2.UnsafeProgramError, match="two members of one name"):
        load_quantized(evil)
