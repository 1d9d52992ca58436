"""Atomic file writes and run records: the one place every CLI writes its outputs through.

Every output is written to a temporary file in the same folder and renamed over the target
(``os.replace``), so a crash never leaves a half-written file under the final name. Every output folder
gets a ``run.json`` with the resolved arguments, the command line, the git commit and package versions.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

_PACKAGES = ("torch", "executorch", "torchao", "coremltools", "torch-pruning", "numpy",
             "opencv-python-headless", "torchinfo", "scikit-image")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it is renamed to ``path``.

    ``suffix`` defaults to the target's own suffix, so writers that pick the format from the file name
    (``cv2.imwrite``, ``savefig``) still work. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (checkpoints, calibration files, exported artifacts)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages that shape our numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when there are uncommitted changes), or None."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


class OutputExistsError(ValueError):
    """An output folder already holds files and the user did not ask to replace them."""


def check_run_dir(out: str | os.PathLike | None, *, overwrite: bool = False, resume_hint: str = "") -> bool:
    """Raise :class:`OutputExistsError` where :func:`make_run_dir` would refuse ``out``; creates nothing.
    Returns whether ``out`` holds files that ``overwrite`` will remove. Call it before any slow step."""
    if out is None:
        return False
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a folder")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    if not overwrite:
        alt = f"pass {resume_hint}, " if resume_hint else "pass "
        raise OutputExistsError(f"--out {out} already holds files (a finished or running job?); {alt}"
                                "--overwrite to replace them, or choose another folder")
    if not (out / "run.json").is_file():
        raise OutputExistsError(f"--out {out} holds files but no run.json, so it is not a run folder of this "
                                "tool; refusing to empty it, even with --overwrite")
    return True


def make_run_dir(out: str | os.PathLike | None, prefix: str, root: str | os.PathLike = "runs", *,
                 overwrite: bool = False, resume_hint: str = "") -> Path:
    """``out`` if given, else ``runs/<prefix>-YYYYmmdd-HHMMSS``; created if missing.

    Nothing is lost: an existing non-empty ``out`` is refused (:class:`OutputExistsError`, naming the folder
    and what to pass instead) unless ``overwrite``; then it must be a run folder of this tool (it holds a
    ``run.json``) and its contents are removed first, so no file of the old run survives beside the new
    ones. A folder of other files is never emptied. ``resume_hint`` (e.g. ``"--resume DIR to continue it"``)
    is added to the refusal."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(root) / f"{prefix}-{stamp}"
    out = Path(out)
    if check_run_dir(out, overwrite=overwrite, resume_hint=resume_hint):
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def record_run(run_dir: str | os.PathLike, args: dict[str, Any], name: str = "run.json",
               command: str | None = None) -> Path:
    """Write ``run_dir/<name>``: resolved arguments, the command that reproduces the run (``command``, e.g.
    ``python -m eapnet.train --steps 10``; default: this process's argv), git commit, versions, the machine
    (``eapnet.cpu.machine``: CPU, cores, the ISA extensions that decide int8/bf16 speed), start time."""
    from eapnet.cpu import machine

    path = Path(run_dir) / name
    atomic_write_json(path, {
        "args": args,
        "command": command or shlex.join(["python", *sys.argv]),
        "argv": sys.argv,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": machine(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    })
    return path
