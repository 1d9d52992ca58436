"""Argument types shared by every command line (sizes, integer ranges, MAcc budgets) and YAML configs.

Each raises ``argparse.ArgumentTypeError`` with a message naming the bad text, so argparse prints
``error: argument --size: size must be HxW ...`` and exits 2.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import yaml

from eapnet.macs import parse_maccs
from eapnet.runs import OutputExistsError, check_run_dir, make_run_dir


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: <what is wrong>``) and exit 2:
    the usage block argparse prints before them buries the message; ``--help`` shows it. Every command
    also takes ``--debug`` (handled by :func:`command`)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if kw.get("add_help", True):
            self.add_argument("--debug", action="store_true", help="show the traceback of an error")
            self.add_argument("--verbose", action="store_true",
                              help="show the third-party messages hidden by default (eapnet/console.py)")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        # "--target-maccs -5G": argparse takes "-5G" for an option and answers "expected one argument";
        # joined as "--target-maccs=-5G" the value reaches its type, whose message names the problem
        fixed: list[str] = []
        for tok in list(sys.argv[1:] if args is None else args):
            prev = fixed[-1] if fixed else ""
            action = self._option_string_actions.get(prev)
            if tok[:1] == "-" and tok[1:2].isdigit() and action is not None and action.nargs != 0:
                fixed[-1] = f"{prev}={tok}"
            else:
                fixed.append(tok)
        return super().parse_known_args(fixed, namespace)


def command(main):
    """Decorate a command's ``main(argv) -> exit code``: an error becomes one line on stderr, no traceback
    unless ``--debug``. Exit 2 for bad input (``ValueError`` and its kinds: ``CheckpointError``,
    ``DataError``, ``BudgetError``, ...; ``OSError``: missing or unwritable files), 1 for a failure of the
    work itself, 130 for Ctrl-C. Usage errors of the parser exit 2 on their own (:class:`Parser`)."""
    @functools.wraps(main)
    def run(argv=None):
        argv = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in argv
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            if debug:
                raise
            known = isinstance(e, (ValueError, OSError))
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            where = "" if known else f"{type(e).__name__}: "
            print(f"error: {where}{text or type(e).__name__}" + ("" if known else " (--debug shows the traceback)"),
                  file=sys.stderr)
            return 2 if known else 1
    return run


MAX_SIDE = 16384
"""Largest side in pixels a size argument takes: no phone camera's frame is larger (200 MP sensors are about
16,000 x 12,000). What a size within it costs in memory is checked by ``eapnet.memory`` where it matters."""


def parse_size(text: str) -> tuple[int, int]:
    """``"1060x1900"`` -> ``(1060, 1900)`` (H x W, pixels, each in [16, ``MAX_SIDE``]); ValueError naming the
    text otherwise."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be HxW in pixels, e.g. 1060x1900; got {text!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16x16, got {text!r}")
    if max(h, w) > MAX_SIDE:
        raise ValueError(f"size must be at most {MAX_SIDE}x{MAX_SIDE} (larger than any camera frame), got {text!r}")
    return h, w


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for :func:`parse_size`."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def side_arg(text: str) -> int:
    """argparse type for a square scene's side: ``"256"`` or ``"256x256"`` -> 256 (pixels, >= 16); the same
    ``HxW`` form as :func:`size_arg`, for the commands whose scenes are square."""
    t = str(text).lower()
    try:
        h, w = parse_size(t) if "x" in t else (int(t), int(t))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e) if "x" in t else f"size must be N or NxN in pixels, got {text!r}") \
            from None
    if h != w:
        raise argparse.ArgumentTypeError(f"these scenes are square: give N or NxN, got {text!r}")
    if h < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16, got {text!r}")
    if h > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"size must be at most {MAX_SIDE} (larger than any camera frame), "
                                         f"got {text!r}")
    return h


def int_at_least(lo: int):
    """argparse type: an integer >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {v}")
        return v
    return parse


def max_threads() -> int:
    """Most CPU threads a ``--threads`` may ask for: 4 per core of this machine. More is a typo (a pool of
    100,000 threads exhausts the machine before the first result), never a speed-up."""
    return 4 * (os.cpu_count() or 1)


def threads_arg(text: str) -> int:
    """argparse type of every ``--threads``: an integer from 1 to :func:`max_threads`."""
    n = int_at_least(1)(text)
    if n > max_threads():
        raise argparse.ArgumentTypeError(f"{n} threads is more than 4 per core of this machine's "
                                         f"{os.cpu_count() or 1} cores (at most {max_threads()})")
    return n


def maccs_arg(text: str) -> int:
    """argparse type for a MAcc budget (``eapnet.macs.parse_maccs``: ``100G``, ``1.5e11``, ``150000M``)."""

    try:
        return parse_maccs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_overwrite(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """The ``--overwrite`` flag of every command that would replace earlier outputs; ``help`` says what it
    replaces (default: the run folder, see :func:`eapnet.runs.check_run_dir`)."""
    p.add_argument("--overwrite", action="store_true",
                   help=help or "replace the run folder given as --out, only one this same command wrote (its "
                                "run.json says so) and that holds none of this call's inputs")


def _path_values(args: argparse.Namespace) -> list[str | Path]:
    """Every string or path among the arguments other than ``--out`` (list entries included): the paths
    this call reads are among them, and those naming no existing path are skipped by the check."""
    values = []
    for key, value in vars(args).items():
        if key != "out":
            values += [v for v in (value if isinstance(value, (list, tuple)) else [value])
                       if isinstance(v, (str, Path)) and str(v)]
    return values


def out_dir(p: argparse.ArgumentParser, args: argparse.Namespace, prefix: str, create: bool = True, **kw):
    """The command's output folder (:func:`eapnet.runs.make_run_dir` of ``args.out``, honouring
    ``args.overwrite``), claimed for the command ``p.prog`` (the console name, e.g. ``eapnet-parity``); the
    paths among the other arguments are the call's inputs, which the folder must not hold. A folder that
    would lose work is the parser's error: one line, exit 2. With ``create=False`` only check
    (:func:`eapnet.runs.check_run_dir`), before the first slow step."""

    kw = {"tool": p.prog, "inputs": _path_values(args), **kw}
    try:
        if not create:
            check_run_dir(args.out, overwrite=args.overwrite, **kw)
            return None
        return make_run_dir(args.out, prefix, overwrite=args.overwrite, **kw)
    except OutputExistsError as e:
        p.error(str(e))
    except OSError as e:  # e.g. a read-only place: say so now, not after the slow part
        p.error(f"--out {args.out}: cannot create the folder: {e.strerror or e}")


def yaml_config(defaults: str | Path, path: str | Path | None, what: str) -> dict:
    """The YAML mapping ``defaults`` updated by the YAML file ``path`` (safe-loaded); ValueError naming
    ``--config PATH`` for a missing file, a non-mapping or a key ``defaults`` does not have. ``what`` names
    the keys in messages (e.g. ``"training"``)."""
    with open(defaults) as f:
        cfg = yaml.safe_load(f)
    if path is None:
        return cfg
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        with open(path) as f:
            user = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:   # syntax errors, and tags such as !!python/object that safe loading refuses
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"--config {path}: not a plain YAML mapping{at}: "
                         f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a text file") from None
    if not isinstance(user, dict):
        raise ValueError(f"--config {path}: expected a YAML mapping of {what} keys, got {type(user).__name__}")
    unknown = sorted(set(user) - set(cfg))
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}; known: {sorted(cfg)}")
    return {**cfg, **user}
