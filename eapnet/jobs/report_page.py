"""Static report pages (``report.html``): what a sweep or a main-job run found, to read at a glance.

    from eapnet.jobs.report_page import run_page, sweep_page
    run_page(Path("runs/main"))                       # -> runs/main/report.html
    sweep_page(Path("runs/sweep"), summary, teacher)  # -> runs/sweep/report.html (the sweep writes it itself)

A page is one HTML file with its plots inline (SVG) and its pictures in ``report_files/`` beside it: no script,
no server, nothing fetched, readable offline and from any folder it is copied to with ``report_files/``.

The sweep's page: PSNR-μ change against the teacher with 95 % paired bootstrap intervals, against MAccs (held-out
synthetic scenes and real crops, one panel each) and against the measured frame time of the int8 and fp32
``.pte`` (native runner, the shipped tiles over the full-size frame); the summary table; for each searched budget
a 1:1 crop of the real full-size frame (the float model, the int8 ``.pte``) and a heat map of where each artifact
departs from the float model; the parity verdicts. A main-job run's page: its models, its artifacts with their
verdicts and the fallback record, and the same pictures.

Heat maps show the per-pixel error of the PSNR-μ tone map (the challenge's μ-law of ``tanh(lin / p99)``, with
``p99`` of the float model's frame), averaged over the colour channels: the quantity whose mean square PSNR-μ
measures, on one scale for every picture of a page (:data:`HEAT_MAX`). The pictures come from the frames the
parity check keeps (:func:`eapnet.export.parity.save_frame`), so they are exactly what parity judged.
"""
from __future__ import annotations

import html
import io
import json
import math
from urllib.parse import quote
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from eapnet.browser import BrowserMissing, check_page
from eapnet.export.parity import load_frame
from eapnet.metrics import psnr_mu
from eapnet.outputs import tonemap, tonemap_preview
from eapnet.rendering import DEFAULT_CROP
from eapnet.runs import atomic_path, atomic_write_text
from eapnet.stats import change_vs, interval_text

HEAT_MAX = 0.05
"""Top of the heat maps' scale: a tone-mapped error of 5 % of the display range (and above) is the brightest
colour. An artifact 33 dB PSNR-μ from its float model has an RMS error of 10^(-33/20) = 0.022 on this scale."""

HTML_BOLD = ("<b>", "</b>")

FILES = "report_files"
"""The page's pictures, in this folder beside ``report.html``."""

ARTIFACT_ORDER = ("pte-fp32", "pte-int8", "coreml-fp16", "coreml-w8a8")
LABELS = {"pte-fp32": ".pte fp32", "pte-int8": ".pte int8", "coreml-fp16": ".mlpackage fp16",
          "coreml-w8a8": ".mlpackage W8A8"}

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1500px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; } h3 { font-size: 15px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.pass { color: #0a6b1f; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } .plots svg { max-width: 100%; height: auto; }
.frames { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; max-width: 480px; }
.note { color: #555; font-size: 12px; max-width: 1100px; } code { font-size: 12px; }
"""


# ------------------------------------------------------------------------------------------------ frames


def run_frames(run: Path) -> dict[str, dict]:
    """The kept full-size frames of a run's parity checks, by artifact key (``pte-int8``, ...): ``{"output",
    "float"}`` (paths), the scene's ``"dataset"`` and ``"id"``, ``"tile"``, ``"overlap"``. A re-check (``parity-fallback.json``) replaces
    the first check's entry for the artifact it re-checked. Artifacts without kept frames are absent."""
    rep = json.loads((run / "report.json").read_text())
    arts = (rep.get("export") or {}).get("artifacts") or {}
    by_file = {Path(a["file"]).name: key for key, a in arts.items() if a.get("file")}
    found = {}
    for name in ("parity.json", "parity-fallback.json"):
        f = run / "parity" / name
        if not f.is_file():
            continue
        for entry in json.loads(f.read_text())["artifacts"]:
            st, key = entry.get("stitched") or {}, by_file.get(entry["artifact"])
            kept = st.get("frames") or []
            if key and kept:
                k = kept[0]
                found[key] = {"output": run / "parity" / "frames" / k["output"],
                              "float": run / "parity" / "frames" / k["float"], "dataset": k["dataset"],
                              "id": k["id"], "tile": st["tile"], "overlap": st["overlap"]}
    return {k: v for k, v in found.items() if v["output"].is_file() and v["float"].is_file()}


def crop_box(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: :data:`eapnet.rendering.DEFAULT_CROP` (the crowd below the stage in the 1060x1900
    frame) where the frame holds it, else a centred window of that size clipped to the frame."""
    H, W = shape[:2]
    y0, y1, x0, x1 = DEFAULT_CROP
    if y1 <= H and x1 <= W:
        return y0, y1, x0, x1
    h, w = min(y1 - y0, H), min(x1 - x0, W)
    return (H - h) // 2, (H - h) // 2 + h, (W - w) // 2, (W - w) // 2 + w


def heat(err: np.ndarray) -> np.ndarray:
    """RGB uint8 heat map of a tone-mapped error map ``(H, W)`` on [0, :data:`HEAT_MAX`] (inferno)."""
    rgba = matplotlib.colormaps["inferno"](np.clip(err / HEAT_MAX, 0, 1))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


JPEG_QUALITY = 92
"""Pictures are JPEG at this quality (the 300x480 crop of the real frame: 63 kB, against 317 kB as PNG): the heat
maps carry the measured differences; the crops are for the eye."""


def _write_picture(path: Path, rgb: np.ndarray) -> None:
    """``rgb`` uint8 ``(H, W, 3)`` as JPEG (``.jpg``) or PNG, by the name's suffix; atomically."""
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix == ".jpg" else []
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"{path}: {path.suffix} encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def _colorbar(path: Path) -> None:
    fig = Figure(figsize=(4.8, 0.55))
    ax = fig.add_axes((0.03, 0.55, 0.94, 0.35))
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap="inferno", extent=(0, HEAT_MAX, 0, 1))
    ax.set_yticks([])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("|tone-mapped artifact − float| (0 to 1 display range)", fontsize=7, labelpad=1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def frame_pictures(frames: dict[str, dict] | None, files: Path, prefix: str) -> list[dict]:
    """Write the float model's 1:1 crop, the int8 ``.pte``'s and each artifact's heat map for one run into
    ``files``, and their record ``<prefix>.json``; returns one ``{"src", "caption"}`` per picture, the float
    model's first. Without ``frames`` (a page rebuilt where the kept frames are not, e.g. in ``reports/``) the
    pictures already in ``files`` are used as recorded, if every one of them is there."""
    record = files / f"{prefix}.json"
    if record.is_file():
        pics = json.loads(record.read_text())
        whole = all((files / p["src"]).is_file() for p in pics)
        newer = all(record.stat().st_mtime >= f[k].stat().st_mtime for f in (frames or {}).values()
                    for k in ("output", "float"))
        if whole and newer:      # made from these very frames (or the frames are not here)
            return pics
    if not frames:
        return []
    pics = _pictures(frames, files, prefix)
    atomic_write_text(record, json.dumps(pics, indent=1))
    return pics


def _pictures(frames: dict[str, dict], files: Path, prefix: str) -> list[dict]:
    first = next(iter(frames.values()))
    ref = load_frame(first["float"])
    y0, y1, x0, x1 = crop_box(ref.shape)
    shared = f"{ref.shape[1]}x{ref.shape[0]} frame, rows {y0}-{y1}, columns {x0}-{x1}, 1:1"
    pics = [{"src": f"{prefix}-float.jpg", "caption": f"float model ({shared}; run in {first['tile'][0]}x"
                                                      f"{first['tile'][1]} tiles like the artifacts)"}]
    _write_picture(files / pics[0]["src"], tonemap_preview(ref[y0:y1, x0:x1], norm_ref=ref))
    for key in sorted(frames, key=lambda k: ARTIFACT_ORDER.index(k) if k in ARTIFACT_ORDER else 99):
        f = frames[key]
        own = ref if f["float"] == first["float"] else load_frame(f["float"])   # its float model, its tiles
        if own.shape != ref.shape:
            continue
        out = load_frame(f["output"])
        err = np.abs(tonemap(out, own) - tonemap(own, own)).mean(axis=2)
        whole = psnr_mu(own, out)
        if key == "pte-int8":   # beside the float model's crop: does the difference show?
            pics.insert(1, {"src": f"{prefix}-{key}.jpg", "caption": f"{LABELS[key]}, the same crop"})
            _write_picture(files / pics[1]["src"], tonemap_preview(out[y0:y1, x0:x1], norm_ref=ref))
        c = err[y0:y1, x0:x1]
        pics.append({"src": f"{prefix}-{key}-error.jpg", "caption": (
            f"{LABELS.get(key, key)} vs float: PSNR-μ {_db(whole)} dB over the whole frame; in the crop mean "
            f"error {c.mean():.4f}, 99.9th percentile {np.percentile(c, 99.9):.4f}")})
        _write_picture(files / pics[-1]["src"], heat(c))
    return pics


def _db(v: float) -> str:
    return "∞" if math.isinf(v) else f"{v:.2f}"


# ------------------------------------------------------------------------------------------------ plots

SERIES = [("search", "float", "C0", "o", "searched, float"), ("search", "int8_eager", "C1", "s", "searched, int8"),
          ("uniform", "float", "C2", "^", "uniform width, float"), ("blocks", "float", "C3", "v", "PDUBs dropped, float")]


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "eapnet-report"}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    if "<metadata>" in text:   # matplotlib's RDF block (creation date, namespaces): not part of the picture
        text = text[:text.index("<metadata>")] + text[text.index("</metadata>") + len("</metadata>"):]
    return text


def _errorbar(ax, pts: list[tuple[float, dict]], gid: str, **kw) -> None:
    """Points ``(x, interval dict)`` with their 95 % intervals; the markers' SVG group gets ``id=gid``."""
    pts = sorted(pts, key=lambda p: p[0])
    xs = [p[0] for p in pts]
    ys = [p[1]["mean"] for p in pts]
    err = [[p[1]["mean"] - p[1]["lo"] for p in pts], [p[1]["hi"] - p[1]["mean"] for p in pts]]
    line, _, _ = ax.errorbar(xs, ys, yerr=err, capsize=3, lw=1.2, ms=5, **kw)
    line.set_gid(gid)


def accuracy_plots(rows: list[dict], teacher_gmaccs: float | None = None) -> list[str]:
    """Inline SVG plots of the PSNR-μ change against the teacher: against GMAccs (held-out, real crops; the
    teacher itself at 0 where ``teacher_gmaccs`` is given) and against the native runner's tiled frame time of the
    searched models; only those with points."""
    svgs = []
    for d, title in (("heldout", "held-out synthetic scenes"), ("real", "real crops")):
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        drawn = 0
        for method, col, color, marker, label in SERIES:
            pts = [(r["gmaccs"], r[f"{d}_{col}_vs_teacher"]) for r in rows
                   if r.get("method", "search") == method and r.get(f"{d}_{col}_vs_teacher")]
            if pts:
                n = pts[0][1]["n"]
                _errorbar(ax, pts, f"series-{d}-{method}-{col}", color=color, marker=marker, label=f"{label} (n={n})")
                drawn += 1
        if not drawn:
            continue
        if teacher_gmaccs:
            ax.scatter([teacher_gmaccs], [0], marker="*", s=140, color="k", zorder=3, label="teacher")
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xscale="log", xlabel="GMAccs at 1900x1060 (NTIRE 2022 count, log scale)",
               ylabel="PSNR-μ change vs teacher (dB)", title=f"Accuracy vs MAccs: {title}")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        svgs.append(_svg(fig))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    drawn = 0
    for prec, col, color, marker in (("int8", "int8_eager", "C1", "s"), ("fp32", "float", "C0", "o")):
        mine = [r for r in rows if r.get("method", "search") == "search" and f"frame_ms_{prec}_tiled" in r
                and r.get(f"heldout_{col}_vs_teacher")]
        if mine:
            pts = [(r[f"frame_ms_{prec}_tiled"] / 1e3, r[f"heldout_{col}_vs_teacher"]) for r in mine]
            _errorbar(ax, pts, f"series-latency-{prec}", color=color, marker=marker,
                      label=f".pte {prec} (accuracy: the {'int8' if prec == 'int8' else 'float'} model, held-out)")
            for r, (x, d) in zip(mine, pts):
                ax.annotate(f"{r['budget_g']:g}G", (x, d["mean"]), textcoords="offset points", xytext=(4, -10),
                            fontsize=7)
            drawn += 1
    if drawn:
        tile = next((r["frame_tile"] for r in rows if "frame_tile" in r), None)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="s per 1900x1060 frame, native runner" + (f", {tile[0]}x{tile[1]} tiles" if tile else ""),
               ylabel="PSNR-μ change vs teacher (dB)", title="Accuracy vs measured frame time (this CPU)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        svgs.append(_svg(fig))
    return svgs


# ------------------------------------------------------------------------------------------------ HTML


def _esc(v) -> str:
    return html.escape(str(v))


def _num(r: dict, k: str, spec: str = ".2f", scale: float = 1.0) -> str:
    return format(r[k] / scale, spec) if isinstance(r.get(k), (int, float)) else "–"


def _verdict(text: str | None) -> str:
    if text is None:
        return "–"
    return f'<span class="{"pass" if text == "pass" else "fail"}">{_esc(text)}</span>'


def summary_table(rows: list[dict]) -> str:
    head = ["budget", "method", "GMAccs", "k params", "PDUBs", "held-out vs teacher: float", "int8 eager",
            "real crops vs teacher: float", "int8 eager", "full-size frame vs teacher: float / .pte int8 (dB)",
            ".pte int8 s/frame: whole / tiled", "peak MB", ".pte fp32 s/frame: whole / tiled", "peak MB",
            "MB .pte int8", "least GT budget to spare, int8 artifacts (dB)", "kept float (.pte int8)", "parity"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [f"{r['budget_g']:g} G", _esc(r.get("method", "search")), _num(r, "gmaccs"), _num(r, "k_params", ".1f"),
                 str(r.get("pdubs", "–")), interval_text(r.get("heldout_float_vs_teacher"), HTML_BOLD),
                 interval_text(r.get("heldout_int8_eager_vs_teacher"), HTML_BOLD),
                 interval_text(r.get("real_float_vs_teacher"), HTML_BOLD),
                 interval_text(r.get("real_int8_eager_vs_teacher"), HTML_BOLD),
                 f"{_num(r, 'fullres_float_vs_teacher')} / {_num(r, 'fullres_pte_int8_vs_teacher')}"]
        for p in ("int8", "fp32"):
            cells += [f"{_num(r, f'frame_ms_{p}_whole', '.2f', 1e3)} / {_num(r, f'frame_ms_{p}_tiled', '.2f', 1e3)}",
                      f"{_num(r, f'frame_mb_{p}_whole', '.0f')} / {_num(r, f'frame_mb_{p}_tiled', '.0f')}"]
        cells += [_num(r, "mb_pte_int8"), _num(r, "int8_gt_margin_min"), _esc(r.get("float_groups_pte_int8") or "–"),
                  _verdict(r.get("parity"))]
        out.append("<tr>" + "".join(f'<td class="l">{c}</td>' if i < 2 else f"<td>{c}</td>"
                                    for i, c in enumerate(cells)) + "</tr>")
    return "\n".join(out) + "</table>"


def verdict_table(rep: dict) -> str:
    """The run's phone artifacts: file, size, verdict, ground-truth budget to spare, worst scene vs float."""
    arts = (rep.get("export") or {}).get("artifacts") or {}
    if not arts:
        return "<p>No phone artifacts in this run.</p>"
    out = ["<table><tr><th class=l>artifact</th><th class=l>file</th><th>MB</th><th>verdict</th>"
           "<th>GT budget to spare (dB)</th><th>worst scene vs float (dB)</th><th>stitched frame vs float</th></tr>"]
    for key in sorted(arts, key=lambda k: ARTIFACT_ORDER.index(k) if k in ARTIFACT_ORDER else 99):
        a = arts[key]
        verdict = "pass" if a["passed"] else "FAIL: " + "; ".join(a.get("failures") or [])
        out.append(f"<tr><td class=l>{_esc(LABELS.get(key, key))}</td><td class=l><code>{_esc(a['file'])}</code></td>"
                   f"<td>{a['bytes'] / 1e6:.2f}</td><td class=l>{_verdict(verdict)}</td><td>{_num(a, 'gt_margin')}</td>"
                   f"<td>{_num(a, 'psnr_mu_vs_float_min')}</td><td>{_num(a, 'stitched_psnr_mu_vs_float_min')}</td></tr>")
    out.append("</table>")
    fb = rep.get("fallback") or {}
    for key, f in fb.items():
        s = f.get("search") or {}
        lat = f.get("latency") or {}
        out.append(f"<p>Mixed-precision fallback for {_esc(LABELS.get(key, key))}: {_esc(f.get('why', ''))}; kept float: "
                   f"<code>{_esc(', '.join(s.get('float_groups') or []) or 'none')}</code> (GT drop on calibration "
                   f"scenes {_num(s, 'drop_all_int8')} → {_num(s, 'drop')} dB); budget to spare "
                   f"{_num(f.get('before') or {}, 'margin')} → {_num(f.get('after') or {}, 'margin')} dB; latency "
                   f"×{_num(lat, 'ratio')}; {(f.get('before') or {}).get('bytes', 0) / 1e6:.2f} → "
                   f"{(f.get('after') or {}).get('bytes', 0) / 1e6:.2f} MB.</p>")
    return "\n".join(out)


def _figures(pics: list[dict]) -> str:
    return '<div class="frames">' + "".join(
        f'<figure><img src="{FILES}/{_esc(quote(p["src"]))}" alt="{_esc(p["caption"])}"><figcaption>{_esc(p["caption"])}'
        f"</figcaption></figure>" for p in pics) + "</div>"


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>" + _esc(title) + "</title><style>"
            + CSS + "</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


HEAT_NOTE = (f"Heat maps: per-pixel error of the PSNR-μ tone map (μ-law of tanh(linear / p99 of the float model's "
             f"frame)), mean over colour channels, 0 (black) to {HEAT_MAX} and above (pale yellow) of the 0-1 display range, "
             f"one scale on this page. The frames are those the parity check ran: each artifact tiled over the real "
             f"full-size frame as an app runs it, the float model over the same tiles.")


def sweep_page(out: Path, rows: list[dict], teacher: dict | None, commits: dict | None = None,
               frames: dict[str, dict] | None = None) -> Path:
    """Write ``out/report.html`` (and ``out/report_files/``) for a sweep's summary ``rows``
    (:func:`eapnet.jobs.budget_sweep.summary_row` plus the sweep's columns); ``frames``: the kept frames of
    each searched run by run folder name (:func:`run_frames`)."""
    files = out / FILES
    files.mkdir(parents=True, exist_ok=True)
    made = sorted({c for c in (commits or {}).values() if c}) or ["not recorded"]
    body = ["<h1>Accuracy vs MAccs and frame time</h1>",
            f"<p>Teacher <code>{_esc((teacher or {}).get('file'))}</code> (sha256 <code>{_esc((teacher or {}).get('sha256'))}"
            f"</code>); code {', '.join(f'<code>{_esc(c)}</code>' for c in made)}.</p>",
            "<p class=note>Each point: a model's mean PSNR-μ change against the teacher on the same scenes, with its "
            "95 % paired bootstrap interval over scenes (eapnet.stats). An interval that excludes 0 is a resolved "
            "change (bold in the table); one that includes 0 is within the scene-to-scene noise of that many scenes. "
            "Frame time: the native runner (eapnet/export/runner) on this machine's CPU, the shipped tile programs "
            "over the real 1900x1060 frame.</p>",
            '<div class="plots">' + "".join(accuracy_plots(rows)) + "</div>",
            "<h2>Every budget and method</h2>", summary_table(rows),
            "<p class=note>Full-size frame vs teacher: PSNR-μ of the model's (tiled) output against the teacher's on "
            "the real 1900x1060 frame, which has no ground truth: agreement, not accuracy. The sweep.md beside this "
            "page has every column (parity subsets, bench at the program size, file sizes).</p>"]
    frames = frames or {}
    per_run = []
    for r in rows:
        pics = frame_pictures(frames.get(r.get("run")), files, r["run"]) \
            if r.get("method", "search") == "search" and r.get("run") else []
        if pics:
            per_run += [f"<h3>{r['budget_g']:g} G: {_num(r, 'gmaccs')} GMAccs, parity {_verdict(r.get('parity'))}"
                        "</h3>", _figures(pics)]
    if per_run:
        _colorbar(files / "heat-scale.png")
        body += ["<h2>The real full-size frame, per searched budget</h2>", f"<p class=note>{HEAT_NOTE}</p>",
                 f'<img src="{FILES}/heat-scale.png" alt="heat map scale">', *per_run]
    page = out / "report.html"
    atomic_write_text(page, _page("EAPNet: accuracy vs MAccs", body))
    return page


def shipped_int8(models: dict, rep: dict) -> dict | None:
    """Of a main-job report's ``models``, the int8 program its int8 ``.pte`` was lowered from: the fallback's
    ``shipped (int8 ...)`` row whose ``program`` is the one ``rep["fallback"]["pte-int8"]`` names, else the QAT
    ``compressed (int8 ...)`` row; None without either."""
    program = ((rep.get("fallback") or {}).get("pte-int8") or {}).get("program")
    return next((m for n, m in models.items() if n.startswith("shipped (int8") and m.get("program") == program),
                None) or next((m for n, m in models.items() if n.startswith("compressed (int8")), None)


def shipped_points(models: dict, int8_program: str | None = None) -> list[dict]:
    """A main-job report's ``models`` as one plot row (:func:`accuracy_plots`): the changes against the teacher of
    what the run ships, its float model (``compressed (float)``) and the int8 program its int8 ``.pte`` was
    lowered from (the fallback's ``shipped (int8 ...)`` row whose ``program`` is ``int8_program``, else the QAT
    ``compressed (int8 ...)`` row); [] without a compressed float model."""
    flt = models.get("compressed (float)")
    if not flt:
        return []
    q = shipped_int8(models, {"fallback": {"pte-int8": {"program": int8_program}}} if int8_program else {})
    teacher = (models.get("teacher (float)") or {}).get("scores") or {}
    row = {"gmaccs": flt["maccs"] / 1e9, "method": "search"}
    for col, m in (("float", flt), ("int8_eager", q)):
        for d, short in (("heldout_synthetic", "heldout"), ("real_crops", "real")):
            s = ((m or {}).get("scores") or {}).get(d)
            delta = change_vs(s, teacher.get(d)) if s else None
            if delta:
                row[f"{short}_{col}_vs_teacher"] = delta
    return [row]


def run_page(run: Path) -> Path:
    """Write ``run/report.html`` (and ``run/report_files/``) for a finished main-job run folder."""
    rep = json.loads((run / "report.json").read_text())
    files = run / FILES
    files.mkdir(parents=True, exist_ok=True)
    models = rep["models"]
    teacher = models.get("teacher (float)") or {}
    body = [f"<h1>{_esc(rep['config'].get('name', run.name))}: {rep['target_maccs'] / 1e9:g} G MAcc budget</h1>",
            (f"<p>Command <code>{_esc(rep['command'])}</code><br>" if rep.get("command") else "<p>")
            + f"Teacher <code>{_esc(rep.get('teacher_file'))}</code>"
            f" (sha256 <code>{_esc(rep.get('teacher_sha256'))}</code>); code <code>{_esc(rep.get('commit'))}</code>; "
            f"{rep['resolution'][1]}x{rep['resolution'][0]} frames.</p>", "<h2>Models</h2>"]
    sets = [d for d in ("heldout_synthetic", "real_crops") if any(d in (m.get("scores") or {}) for m in models.values())]
    t = ["<table><tr><th class=l>model</th><th>GMAccs</th><th>k params</th>"
         + "".join(f"<th>PSNR-μ {d}</th><th>vs teacher (dB, 95 % CI)</th>" for d in sets) + "</tr>"]
    for name, m in models.items():
        sc = m.get("scores") or {}
        cells = [f"<td class=l>{_esc(name)}</td><td>{m['maccs'] / 1e9:.2f}</td><td>{m['params'] / 1e3:.1f}</td>"]
        for d in sets:
            s = sc.get(d)
            delta = change_vs(s, (teacher.get("scores") or {}).get(d)) if s and name != "teacher (float)" else None
            cells.append(f"<td>{_num(s or {}, 'psnr_mu')}</td><td>{interval_text(delta, HTML_BOLD)}</td>")
        t.append("<tr>" + "".join(cells) + "</tr>")
    rows = shipped_points(models, ((rep.get("fallback") or {}).get("pte-int8") or {}).get("program"))
    plots = accuracy_plots(rows, teacher.get("maccs", 0) / 1e9 or None)
    body += ["\n".join(t) + "</table>", '<div class="plots">' + "".join(plots) + "</div>",
             "<h2>Phone artifacts and parity</h2>", verdict_table(rep)]
    pics = frame_pictures(run_frames(run), files, "run")
    if pics:
        _colorbar(files / "heat-scale.png")
        body += ["<h2>The real full-size frame</h2>", f"<p class=note>{HEAT_NOTE}</p>",
                 f'<img src="{FILES}/heat-scale.png" alt="heat map scale">', _figures(pics)]
    page = run / "report.html"
    atomic_write_text(page, _page(f"EAPNet main job: {run.name}", body))
    return page


def checked(page: Path, log=print) -> list[str]:
    """Render ``page`` in headless Chromium where it is installed (:func:`eapnet.browser.check_page`) and log each
    problem as a WARNING line; returns the problems ([] also when no Chromium is installed: nothing to look with)."""
    try:
        problems = check_page(page)["problems"]
    except BrowserMissing:
        return []
    except (RuntimeError, OSError, ValueError) as e:
        problems = [f"not rendered ({type(e).__name__}: {e})"]
    for p in problems:
        log(f"WARNING {page}: {p}")
    return problems
