"""Per-operator latency of a ``.pte`` from ExecuTorch's own devtools (ETDump read by ``Inspector``).

    from eapnet.export.pte_profile import profile_pte
    prof = profile_pte("runs/c/export/standard_xnnpack_int8_1060x1900.pte", runs=2, threads=2)
    print("\\n".join(prof.markdown()))

or ``python -m eapnet.bench.bench_mobile ... --profile``. A program loaded with ``enable_etdump=True`` records one
profiling event per XNNPACK operator it runs, named as XNNPACK names its operators:
``Convolution (NHWC, QC8) IGEMM #3`` (an int8 convolution), ``Convert (NC, F32, QD8) #1`` (quantize),
``Resize Bilinear (NHWC) #2`` ... This module groups those events by operator kind and number format and
states how much of the time runs outside int8 kernels: float compute, quantize / dequantize conversions and
32-bit data movement. Times are milliseconds per run (median over the timed runs of each event, summed);
the first run is a warm-up and not counted.
"""
from __future__ import annotations

import os
import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from eapnet.console import native_stderr
from eapnet.inference import example_inputs
from eapnet.export.executorch_export import check_pte, set_threads

__all__ = ["FORMATS", "OpEvent", "Profile", "classify", "planned_memory_mb", "profile_pte", "profile_from_etdump"]

FORMATS = ("int8", "float", "convert", "move32", "move8", "untyped")
"""Number formats of an operator event, as :func:`classify` assigns them from its name: ``int8`` (an int8
kernel: QS8 / QU8 / QC8 / QD8 operands), ``float`` (F32 / F16 / BF16 compute), ``convert`` (XNNPACK's
Convert: quantize or dequantize between float and int8), ``move32`` / ``move8`` (copies, slices,
transposes of 32-bit or 8-bit data), ``untyped``: XNNPACK names many operators without their number
format (``Add (ND)``, ``Multiply (ND)``, ``Resize Bilinear (NHWC)``, ``Clamp (NC)``, reshapes, and an int8
sigmoid as ``Invalid Unary Op``), so their format is not known from the ETDump alone."""

_INT8 = {"QS8", "QU8", "QC8", "QC8W", "QD8", "QC4W", "QB4W", "QP8"}
_FLOAT = {"F32", "F16", "BF16"}
_EVENT = re.compile(r"^(?P<op>[^(]+?)\s*\((?P<args>[^)]*)\)\s*(?P<variant>.*)$")


def classify(name: str) -> tuple[str, str]:
    """``(kind, format)`` of an XNNPACK event name: ``"Convolution (NHWC, QC8) IGEMM #3"`` ->
    ``("Convolution IGEMM", "int8")``; ``"Convert (NC, F32, QD8) #1"`` -> ``("Convert", "convert")``;
    ``"Slice (ND, X32) #2"`` -> ``("Slice", "move32")``. ``format`` is one of :data:`FORMATS`."""
    name = re.sub(r"\s*#\d+$", "", name.strip())   # the instance number
    m = _EVENT.match(name)
    if m is None:
        return name, "untyped"
    op, variant = m.group("op").strip(), m.group("variant").strip()
    args = {a.strip() for a in m.group("args").split(",")}
    kind = f"{op} {variant}".strip()
    if op == "Convert":
        return kind, "convert"
    if "X32" in args:
        return kind, "move32"
    if "X8" in args:
        return kind, "move8"
    if args & _INT8:
        return kind, "int8"
    if args & _FLOAT:
        return kind, "float"
    return kind, "untyped"


@dataclass(frozen=True)
class OpEvent:
    """One operator of the program: its event name and its time (ms) in each timed run."""
    name: str
    ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms) if self.ms else 0.0


@dataclass
class Profile:
    """The operator events of one program and the runtime's own total per run (``Method::execute``)."""
    program: str
    events: list[OpEvent]
    execute_ms: float
    runs: int
    threads: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def operator_ms(self) -> float:
        """Sum over operators of their median time per run (ms)."""
        return sum(e.median_ms for e in self.events)

    def by_format(self) -> dict[str, float]:
        """ms per run in each of :data:`FORMATS` (every format present, zeros included)."""
        out = dict.fromkeys(FORMATS, 0.0)
        for e in self.events:
            out[classify(e.name)[1]] += e.median_ms
        return out

    def outside_int8_share(self) -> tuple[float, float]:
        """Share of the operator time spent outside int8 kernels, as bounds in [0, 1]: at least float compute,
        conversions and 32-bit moves; at most that plus the untyped operators (see :data:`FORMATS`)."""
        total = self.operator_ms
        if total <= 0:
            return 0.0, 0.0
        f = self.by_format()
        low = (f["float"] + f["convert"] + f["move32"]) / total
        return low, low + f["untyped"] / total

    def table(self) -> list[dict]:
        """Rows grouped by ``(kind, format)``, slowest first: count, ms per run, share of operator time."""
        groups: dict[tuple[str, str], list[OpEvent]] = {}
        for e in self.events:
            groups.setdefault(classify(e.name), []).append(e)
        total = self.operator_ms or 1.0
        rows = [{"kind": k, "format": f, "count": len(evs), "ms": sum(e.median_ms for e in evs),
                 "share": sum(e.median_ms for e in evs) / total} for (k, f), evs in groups.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def to_dict(self) -> dict:
        return {"program": self.program, "runs": self.runs, "threads": self.threads, "execute_ms": self.execute_ms,
                "operator_ms": self.operator_ms, "by_format_ms": self.by_format(),
                "outside_int8_share": self.outside_int8_share(), "table": self.table(),
                "events": [{"name": e.name, "ms": list(e.ms)} for e in self.events], "notes": self.notes}

    def markdown(self, top: int | None = 15) -> list[str]:
        """The grouped table (``top`` slowest groups, the rest summed in one row) and the format split."""
        rows = self.table()
        fmt = self.by_format()
        total = self.operator_ms or 1.0
        lo, hi = self.outside_int8_share()
        lines = [f"`{Path(self.program).name}`: {self.execute_ms:.1f} ms per run in `Method::execute`, "
                 f"{self.operator_ms:.1f} ms in {len(self.events)} operators ({self.runs} timed runs, "
                 f"threads {self.threads or 'default'}); outside int8 kernels: {100 * lo:.1f} % "
                 f"(up to {100 * hi:.1f} % counting the untyped operators)",
                 "",
                 "| operator | format | count | ms per run | share |", "|---|---|---:|---:|---:|"]
        shown = rows if top is None else rows[:top]
        for r in shown:
            lines.append(f"| {r['kind']} | {r['format']} | {r['count']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |")
        rest = rows[len(shown):]
        if rest:
            ms = sum(r["ms"] for r in rest)
            lines.append(f"| ({len(rest)} other groups) | | {sum(r['count'] for r in rest)} | {ms:.2f} | "
                         f"{100 * ms / total:.1f} % |")
        lines += ["", "| format | ms per run | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.2f} | {100 * v / total:.1f} % |" for k, v in fmt.items() if v > 0]
        return lines


def profile_from_etdump(etdump: str | os.PathLike, program: str = "", *, warmup: int = 1,
                        threads: int | None = None) -> Profile:
    """Read an ETDump with ``executorch.devtools.Inspector``; the first ``warmup`` runs are dropped."""
    from executorch.devtools import Inspector

    events, execute = [], []
    for block in Inspector(etdump_path=str(etdump)).event_blocks:
        for ev in block.events:
            raw = list(ev.perf_data.raw) if ev.perf_data is not None else []
            timed = tuple(float(x) for x in raw[warmup:])
            if ev.name == "Method::execute":
                execute.extend(timed)
            elif ev.is_delegated_op and ev.name != "DELEGATE_CALL":
                events.append(OpEvent(ev.name, timed))
    if not events:
        raise ValueError(f"{etdump}: no operator events (was the program run with ETDump enabled?)")
    runs = max(len(e.ms) for e in events)
    return Profile(program=str(program), events=events,
                   execute_ms=statistics.median(execute) if execute else float("nan"), runs=runs, threads=threads)


def profile_pte(path: str | os.PathLike, *, runs: int = 2, threads: int | None = None, seed: int = 1) -> Profile:
    """Run the ``.pte`` at ``path`` ``runs + 1`` times (one warm-up) on example inputs of its own size with
    ETDump on, and return its :class:`Profile`. ``threads``: XNNPACK thread pool size (default: the runtime's)."""
    from executorch.extension.pybindings import portable_lib

    path = Path(path)
    check_pte(path)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    set_threads(threads)
    # the pybindings loader, not load_pte's Runtime: only it can record an ETDump
    with native_stderr():
        module = portable_lib._load_for_executorch(str(path), enable_etdump=True)
    size = tuple(module.method_meta("forward").input_tensor_meta(0).sizes())[-2:]
    ldrs, evs = example_inputs(size, seed=seed)
    for _ in range(runs + 1):
        module.forward((ldrs, evs))
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        module.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
        return profile_from_etdump(etdump, str(path), warmup=1, threads=threads)


def planned_memory_mb(path: str | os.PathLike) -> float:
    """MB of the memory ExecuTorch plans for ``forward`` of the ``.pte`` at ``path`` (its execution plan's
    non-constant buffers: the program's inputs, outputs and the tensors between delegate calls). XNNPACK's
    own workspace for the intermediate tensors inside a delegated subgraph is not part of it: it is
    allocated by XNNPACK when the program is loaded and shows in the process's resident memory."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(path).read_bytes())
    program = getattr(program, "program", program)   # newer versions wrap the Program
    plan = next((p for p in program.execution_plan if p.name == "forward"), None)
    if plan is None:
        raise ValueError(f"{path}: no forward method in the program")
    return sum(plan.non_const_buffer_sizes) / 1e6
