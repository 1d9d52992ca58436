"""The README's main job (smoke run) on the real crops, without the full-resolution pass."""
import json

import pytest

from eapnet.smoke import DEFAULT_DATA, main

pytestmark = pytest.mark.skipif(not (DEFAULT_DATA / "crops256").is_dir(),
                                reason=f"real NTIRE samples not found at {DEFAULT_DATA}")


def test_smoke_run_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--no-full-res", "--variants", "lightweight", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["variants"]["lightweight"]["maccs"] > 100e9
    crops = report["crops"]["lightweight"]
    assert set(crops) == {"0000", "0001", "0002", "0003"}
    assert all(10 < v["psnr_mu"] < 60 for v in crops.values())
    assert (out / "report.md").read_text().startswith("# Smoke run")
    run = json.loads((out / "run.json").read_text())
    assert run["args"]["variants"] == ["lightweight"] and run["args"]["full_res"] is False


def test_smoke_rejects_a_folder_without_samples(tmp_path):
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path), "--out", str(tmp_path / "o")])


def test_smoke_falls_back_to_synthetic_scenes_without_shared_data(tmp_path, monkeypatch):
    import eapnet.smoke as smoke

    monkeypatch.setattr(smoke, "DEFAULT_DATA", tmp_path / "absent")
    out = tmp_path / "run"
    # main() reads DEFAULT_DATA when it builds its parser, so no --data means the missing folder.
    assert smoke.main(["--no-full-res", "--variants", "lightweight", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "synthetic" in report["data"]
    assert set(report["crops"]["lightweight"]) == {"syn0", "syn1", "syn2", "syn3"}
