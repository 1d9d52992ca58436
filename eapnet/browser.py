"""Look at a static HTML page the way a reader does: headless Chromium (Debian's ``chromium``).

    from eapnet.browser import check_page, screenshot
    problems = check_page(Path("runs/sweep/report.html"))   # [] when it renders cleanly
    screenshot(Path("runs/sweep/report.html"), Path("runs/sweep/report.png"))

:func:`check_page` loads a copy of the page (beside it, so its relative pictures resolve) with a probe added:
a listener installed before any of the page's own scripts records script errors and resources that fail to
load, and after the load event every image must have decoded (non-zero natural width) and every inline plot
(an ``<svg>`` inside ``.plots``) must hold at least one data series (``<g id="series-...">``) with a drawn
marker. Chromium is installed by ``scripts/setup_env.sh`` (Debian's package, as root).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--hide-scrollbars",
         "--virtual-time-budget=10000")

PROBE_HEAD = """<script>window.__problems = [];
window.addEventListener("error", e => { window.__problems.push(e.target && e.target !== window
  ? "failed to load: " + (e.target.getAttribute("src") || e.target.getAttribute("href") || e.target.tagName)
  : "script error: " + e.message); }, true);</script>"""
PROBE_TAIL = """<script>window.addEventListener("load", () => {
  const p = window.__problems;
  for (const img of document.images)
    if (!img.complete || img.naturalWidth === 0) p.push("image not shown: " + img.getAttribute("src"));
  document.querySelectorAll(".plots svg").forEach((svg, i) => {
    const series = svg.querySelectorAll('g[id^="series-"]');
    const drawn = [...series].filter(g => g.querySelector("use, path"));
    if (!drawn.length) p.push("empty plot: number " + (i + 1) + " (" + (svg.querySelector("text") || {}).textContent + ")");
  });
  const out = document.createElement("pre");
  out.id = "__page_check";
  out.textContent = JSON.stringify({problems: p, images: document.images.length,
                                    plots: document.querySelectorAll(".plots svg").length});
  document.body.appendChild(out);
});</script>"""


class BrowserMissing(RuntimeError):
    """No Chromium on this machine (``scripts/setup_env.sh`` installs it)."""


def chromium() -> str:
    """The Chromium executable; :class:`BrowserMissing` when there is none."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserMissing("no chromium on this machine: run scripts/setup_env.sh (as root: apt-get install chromium)")


def _run(args: list[str], timeout: float) -> str:
    try:
        done = subprocess.run([chromium(), *FLAGS, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"chromium took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"chromium exited {done.returncode}: {tail}")
    return done.stdout


def check_page(page: Path, timeout: float = 60) -> dict:
    """Render ``page`` headless; returns ``{"problems": [...], "images": n, "plots": n}`` (see module docstring).
    ``problems`` is empty when every script ran, every picture shows and every plot has points."""
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    if "<head>" not in text or "</body>" not in text:
        raise ValueError(f"{page}: not an HTML page with <head> and </body>")
    probe = text.replace("<head>", "<head>" + PROBE_HEAD, 1)
    probe = probe[:probe.rindex("</body>")] + PROBE_TAIL + probe[probe.rindex("</body>"):]
    fd, tmp = tempfile.mkstemp(prefix=".check-", suffix=".html", dir=page.parent)
    os.close(fd)
    try:
        Path(tmp).write_text(probe, encoding="utf-8")
        dom = _run(["--dump-dom", Path(tmp).as_uri()], timeout)
    finally:
        os.unlink(tmp)
    m = re.search(r'<pre id="__page_check">(.*?)</pre>', dom, re.S)
    if not m:
        return {"problems": ["the page did not finish loading (no load event)"], "images": 0, "plots": 0}
    return json.loads(html.unescape(m.group(1)))


def screenshot(page: Path, out: Path, width: int = 1500, height: int = 4200, timeout: float = 60) -> Path:
    """A PNG of ``page`` as a ``width`` x ``height`` window shows it (the top of a longer page)."""
    page, out = Path(page).resolve(), Path(out).resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        _run([f"--screenshot={tmp}", f"--window-size={width},{height}", page.as_uri()], timeout)
        if Path(tmp).stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot of {page}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
