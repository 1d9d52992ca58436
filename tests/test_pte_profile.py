"""Per-operator profiles of ``.pte`` files (eapnet/export/pte_profile.py): XNNPACK event names are classified by
operator kind and number format, and a profile's table, format split and outside-int8 bounds add up.
The ETDump of real programs is read in tests/test_executorch_export.py (fp32 and int8 .pte)."""
import pytest

from eapnet.export.pte_profile import FORMATS, OpEvent, Profile, classify


@pytest.mark.parametrize("name, kind, fmt", [
    ("Convolution (NHWC, QC8) IGEMM #3", "Convolution IGEMM", "int8"),
    ("Fully Connected (NC, QS8, QC8W) GEMM #41", "Fully Connected GEMM", "int8"),
    ("Convolution (NHWC, F32) DWConv #2", "Convolution DWConv", "float"),
    ("Deconvolution (NHWC, F32) Subconv2D #1", "Deconvolution Subconv2D", "float"),
    ("Convert (NC) #7", "Convert", "convert"),
    ("Slice (ND, X32) #2", "Slice", "move32"),
    ("Copy (NC, X8) #1", "Copy", "move8"),
    ("Add (ND) #4", "Add", "untyped"),             # XNNPACK does not name the format of these
    ("Resize Bilinear (NHWC) #1", "Resize Bilinear", "untyped"),
    ("Invalid Unary Op", "Invalid Unary Op", "untyped"),
])
def test_classify_xnnpack_event_names(name, kind, fmt):
    assert classify(name) == (kind, fmt) and fmt in FORMATS


def test_profile_groups_and_bounds_add_up():
    events = [OpEvent("Fully Connected (NC, QS8, QC8W) GEMM #1", (4.0, 6.0)),   # median 5
              OpEvent("Fully Connected (NC, QS8, QC8W) GEMM #2", (3.0,)),
              OpEvent("Convert (NC) #1", (1.0, 1.0)),
              OpEvent("Convolution (NHWC, F32) IGEMM #1", (2.0, 2.0)),
              OpEvent("Add (ND) #1", (0.5, 1.5)),
              OpEvent("Slice (ND, X32) #1", (1.0, 1.0))]
    p = Profile("x.pte", events, execute_ms=13.5, runs=2)
    assert p.operator_ms == pytest.approx(13.0)
    fmt = p.by_format()
    assert list(fmt) == list(FORMATS) and fmt["int8"] == pytest.approx(8.0) and fmt["untyped"] == pytest.approx(1.0)
    assert sum(fmt.values()) == pytest.approx(p.operator_ms)
    lo, hi = p.outside_int8_share()
    assert lo == pytest.approx(4.0 / 13.0) and hi == pytest.approx(5.0 / 13.0)
    table = p.table()
    assert table[0] == {"kind": "Fully Connected GEMM", "format": "int8", "count": 2, "ms": pytest.approx(8.0),
                        "share": pytest.approx(8.0 / 13.0)}
    assert sum(r["ms"] for r in table) == pytest.approx(p.operator_ms)
    md = "\n".join(p.markdown(top=2))
    assert "outside int8 kernels: 30.8 %" in md and "(3 other groups)" in md
    assert p.to_dict()["outside_int8_share"] == (lo, hi)
