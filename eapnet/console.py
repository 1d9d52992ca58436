"""A console a person can read: known, harmless third-party messages are hidden by default.

The libraries this tool builds on print a screenful at import and during export: torchao's CUDA kernels
that a CPU machine cannot load, coremltools' checks of package versions and of its macOS-only runtime,
torch's notes on deprecated pytree calls (about 20 copies per export). Each is matched precisely (logger
and message, or warning category and message), never whole loggers or all warnings, and each says why it
is harmless here. ``--verbose`` on any command, or ``EAPNET_VERBOSE=1``, shows them all.

Installed when :mod:`eapnet` is imported, before those libraries are (they log at import time). Progress
bars that do not go to a terminal (a log file, ``nohup``) redraw every 30 s, not many times a second.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

# (logger name, message pattern, why it is harmless here)
KNOWN_LOG_MESSAGES = (
    ("torchao", r"Failed to load .*_C_(mxfp8|cutlass_90a)",
     "CUDA-only kernels of torchao; the int8 path here runs on CPU kernels"),
    ("torch.utils._pytree", r"is an Enum subclass and is now natively supported",
     "torchao registers its enums the older way; nothing depends on it"),
    ("coremltools", r"scikit-learn version .* is not supported",
     "coremltools' scikit-learn converter is not used"),
    ("coremltools", r"Torch version .* has not been tested with coremltools",
     "every .mlpackage is checked against the float model by eapnet.export.parity instead"),
    ("coremltools", r"Failed to load _ML\w+Proxy",
     "the Core ML runtime exists only on macOS; elsewhere parity runs the MIL reference interpreter"),
)
# (pattern of a line a native library writes to stderr, why it is harmless here)
KNOWN_NATIVE_LINES = (
    (r"^\[cpuinfo_utils\.cpp:\d+\] ",
     "ExecuTorch's thread-pool sizing probes ARM-only /sys files on every program load and falls back to the "
     "core count it gets from the OS"),
)
# (category, message pattern, why)
KNOWN_WARNINGS = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "raised inside torch.export's own pytree handling, once per traced call"),
)


def verbose_requested() -> bool:
    """``--verbose`` on the command line or ``EAPNET_VERBOSE=1`` in the environment."""
    return "--verbose" in sys.argv[1:] or os.environ.get("EAPNET_VERBOSE", "") not in ("", "0")


class _Known(logging.Filter):
    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.search(msg) for p in self.patterns)


def install(verbose: bool | None = None) -> None:
    """Hide the messages above (idempotent); nothing when ``verbose`` (default: :func:`verbose_requested`).
    Progress bars written to a file or pipe (not a terminal) redraw at most every 30 s instead of
    several times a second (tqdm reads ``TQDM_MININTERVAL`` when it is imported)."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    if verbose_requested() if verbose is None else verbose:
        return
    by_logger: dict[str, list[str]] = {}
    for name, pattern, _ in KNOWN_LOG_MESSAGES:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Known) for f in logger.filters):
            logger.addFilter(_Known(patterns))
    for category, pattern, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


@contextlib.contextmanager
def native_stderr(verbose: bool | None = None) -> Iterator[None]:
    """Hide the :data:`KNOWN_NATIVE_LINES` that C++ code writes straight to file descriptor 2 inside the block
    (the logging filters above cannot see them); every other line is passed on to stderr when the block ends,
    in order, so a native error message is never lost. Nothing is captured when ``verbose`` (default:
    :func:`verbose_requested`)."""
    if verbose_requested() if verbose is None else verbose:
        yield
        return
    fd = 2   # native code writes to descriptor 2 whatever Python's sys.stderr is
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            buf.seek(0)
            patterns = [re.compile(p) for p, _ in KNOWN_NATIVE_LINES]
            kept = [ln for ln in buf.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not any(p.search(ln) for p in patterns)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
