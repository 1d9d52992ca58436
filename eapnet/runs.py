"""Atomic file writes and run records: the one place every CLI writes its outputs through.

Every output is written to a temporary file in the same folder and renamed over the target
(``os.replace``), so a crash never leaves a half-written file under the final name. Every output folder
gets a ``run.json`` with the command that wrote it, the resolved arguments, the command line, the git commit
and package versions, and is held by its run for the life of the process (:func:`make_run_dir`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator
from eapnet.cpu import machine

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


# Folders this process has claimed with make_run_dir / lock_run_dir: resolved path -> (the open folder whose
# flock is the claim, the command that claimed it). Never closed: the lock lasts as long as the process, and
# the kernel drops it when the process ends, however it ends (kill -9 included), so no stale lock is left.
_HELD: dict[Path, tuple[int, str]] = {}


def _lock_holder(out: Path) -> int | None:
    """The pid holding ``out``'s flock according to ``/proc/locks`` (Linux), or None where that is unknown."""
    try:
        st = out.stat()
        with open("/proc/locks") as f:
            for line in f:   # "1: FLOCK  ADVISORY  WRITE 5332 fe:00:2147559 0 EOF" (major:minor in hex)
                parts = line.replace("->", " ").split()
                if len(parts) >= 6 and parts[1] == "FLOCK":
                    major, minor, inode = parts[5].split(":")
                    if (int(inode), int(major, 16), int(minor, 16)) == (st.st_ino, os.major(st.st_dev),
                                                                         os.minor(st.st_dev)):
                        return int(parts[4])
    except (OSError, ValueError):
        pass
    return None


def _busy(out: Path, flag: str) -> str:
    pid = _lock_holder(out)
    return (f"{flag} {out} is in use by a running job" + (f" (pid {pid})" if pid else "")
            + "; wait for it to end or choose another folder")


def _in_use(out: Path) -> bool:
    """Whether another process holds ``out``'s lock (this process's own claim does not count)."""
    if out.resolve() in _HELD:
        return False
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)   # shared: two checks never block each other
    except BlockingIOError:
        return True
    except OSError:   # a file system without flock: nothing can be known, nothing is refused
        return False
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def lock_run_dir(out: str | os.PathLike, *, tool: str, flag: str = "--out") -> None:
    """Claim the existing folder ``out`` for ``tool`` until this process ends: an exclusive ``flock`` on the
    folder itself (no lock file inside it). :class:`OutputExistsError` (naming ``flag``, the holder's pid
    where ``/proc/locks`` shows it) when another process holds it; a second claim by this process is a
    no-op. On a file system without ``flock`` the run goes on unlocked. :func:`record_run` records ``tool``."""
    key = Path(out).resolve()
    if key in _HELD:
        _HELD[key] = (_HELD[key][0], tool)   # this process's newer claim names the tool its run.json records
        return
    fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    for attempt in range(20):   # another process's check (_in_use) holds a shared lock for microseconds
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 19:
                os.close(fd)
                raise OutputExistsError(_busy(Path(out), flag)) from None
            time.sleep(0.05)
        except OSError:
            break
    _HELD[key] = (fd, tool)


def _release(out: Path) -> None:
    fd, _ = _HELD.pop(out.resolve())
    os.close(fd)


def _recorded_tool(out: Path) -> str | None:
    """The ``tool`` field of ``out/run.json``; None when it has none (run folders written before it) or
    cannot be read."""
    try:
        tool = json.loads((out / "run.json").read_text()).get("tool")
    except (OSError, ValueError, AttributeError):
        return None
    return tool if isinstance(tool, str) else None


def _inside(path: str | os.PathLike, out: Path) -> bool:
    """Whether the existing ``path`` is ``out`` or lies below it, as written or with links resolved."""
    p = Path(path)
    if not p.exists():
        return False
    pairs = ((Path(os.path.abspath(p)), Path(os.path.abspath(out))), (p.resolve(), out.resolve()))
    return any(a == o or o in a.parents for a, o in pairs)


def check_run_dir(out: str | os.PathLike | None, *, tool: str, overwrite: bool = False, resume_hint: str = "",
                  inputs: Iterable[str | os.PathLike | None] = ()) -> bool:
    """Raise :class:`OutputExistsError` where :func:`make_run_dir` would refuse ``out``; creates nothing.
    Returns whether ``out`` holds files that :func:`make_run_dir` will remove. Call it before any slow step.

    Refused: a folder another process holds (:func:`lock_run_dir`), with or without ``overwrite``; a folder
    holding one of ``inputs`` (the paths this call reads; those that do not exist are skipped), always; a
    folder with files unless ``overwrite``; with ``overwrite``, a folder whose ``run.json`` was not written
    by ``tool`` (the console command, e.g. ``"eapnet-compress"``), also when it names no tool or there is no
    ``run.json``. A folder holding nothing but ``run.json`` (a run that stopped before its first output) has
    no work to lose: it is reused as it is."""
    if out is None:
        return False
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a folder")
    if not out.is_dir():
        return False
    if _in_use(out):
        raise OutputExistsError(_busy(out, "--out"))
    names = {p.name for p in out.iterdir()}
    if not names:
        return False
    held = [str(i) for i in inputs if i is not None and str(i) and _inside(i, out)]
    if held:
        raise OutputExistsError(f"--out {out} holds {held[0]}, an input of this command; refusing to replace it, "
                                "even with --overwrite: choose another folder")
    if names == {"run.json"}:
        return True
    if not overwrite:
        alt = f"pass {resume_hint}, " if resume_hint else "pass "
        raise OutputExistsError(f"--out {out} already holds files (a finished or running job?); {alt}"
                                "--overwrite to replace them, or choose another folder")
    if "run.json" not in names:
        raise OutputExistsError(f"--out {out} holds files but no run.json, so it is not a run folder of this "
                                "tool; refusing to empty it, even with --overwrite")
    wrote = _recorded_tool(out)
    if wrote is None or wrote != tool:
        who = (f"a run folder of {wrote}, not of {tool}" if wrote else
               "a run folder whose run.json does not say which tool wrote it")
        raise OutputExistsError(f"--out {out} is {who}; refusing to replace it, even with --overwrite: remove it "
                                "by hand or choose another folder")
    return True


def make_run_dir(out: str | os.PathLike | None, prefix: str, root: str | os.PathLike = "runs", *, tool: str,
                 overwrite: bool = False, resume_hint: str = "",
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """``out`` if given, else ``runs/<prefix>-YYYYmmdd-HHMMSS``; created if missing and claimed for ``tool``
    (:func:`lock_run_dir`) for the life of this process.

    Nothing is lost: :func:`check_run_dir` says which folders are refused (:class:`OutputExistsError`,
    naming the folder and what to pass instead; ``resume_hint``, e.g. ``"--resume DIR to continue it"``, is
    added to the refusal of a folder with files). A folder that is replaced (``overwrite``, a run folder of
    the same ``tool``; or one holding only ``run.json``) is emptied first, so no file of the old run
    survives beside the new ones. The check is repeated once the folder is claimed, so a job that started
    or finished in between is not emptied."""
    if out is None:   # a folder of its own: two runs started in the same second get -2, -3, ...
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(root) / f"{prefix}-{stamp}"
        n = 1
        while out.exists():
            n += 1
            out = Path(root) / f"{prefix}-{stamp}-{n}"
    out = Path(out)
    inputs = list(inputs)
    kw = dict(tool=tool, overwrite=overwrite, resume_hint=resume_hint, inputs=inputs)
    check_run_dir(out, **kw)   # refuse before creating anything
    out.mkdir(parents=True, exist_ok=True)
    claimed = out.resolve() not in _HELD
    lock_run_dir(out, tool=tool)
    try:
        replace = check_run_dir(out, **kw)
    except OutputExistsError:
        if claimed:
            _release(out)
        raise
    if replace:
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    return out


def record_run(run_dir: str | os.PathLike, args: dict[str, Any], name: str = "run.json",
               command: str | None = None, tool: str | None = None) -> Path:
    """Write ``run_dir/<name>``: the command that wrote the folder (``tool``, a console command such as
    ``"eapnet-compress"``; default: the one that claimed ``run_dir`` in this process, see
    :func:`make_run_dir`; ``--overwrite`` replaces only a folder of the same tool), resolved arguments, the
    command line that reproduces the run (``command``, e.g. ``python -m eapnet.train --steps 10``; default:
    this process's argv), git commit, versions, the machine (``eapnet.cpu.machine``: CPU, cores, the ISA
    extensions that decide int8/bf16 speed), start time."""

    path = Path(run_dir) / name
    if tool is None:
        tool = _HELD.get(Path(run_dir).resolve(), (None, None))[1]
    atomic_write_json(path, {
        "tool": tool,
        "args": args,
        "command": command or shlex.join(["python", *sys.argv]),
        "argv": sys.argv,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "machine": machine(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    })
    return path
