"""EAPNet (Efficient Attention-and-alignment-guided Progressive Network, NTIRE 2022 HDR) as a config table.

A variant is data: an :class:`EAPNetConfig` row. ``build_model("standard")`` and
``build_model("lightweight")`` give the paper's two models (Table 1, exp. 8 and exp. 6); every ablation
knob of Table 1 is a field, and a pruned model is the same config with other widths.

Interface (the NTIRE 2022 one): ``model(ldrs, evs)`` with ``ldrs`` ``(B, 3, 3, H, W)`` = short, medium,
long LDR frames, gamma-encoded, in [0, 1], and ``evs`` ``(B, 3)`` exposure values in stops relative to the
medium frame. Output ``(B, 3, H, W)``: HDR in the challenge's ground-truth domain (gamma-encoded with
2.24, aligned to the medium frame, >= 0, may exceed 1). Any H, W: the input is padded to
``config.pad_multiple`` inside and the output cropped back.

The paper's Figs. 2-6 (layer diagrams) are not in its text, so where it is silent we chose, and each choice
says why next to the code. The widths were then fitted so that the two named variants land on the paper's
MAccs and parameter counts (Table 1, Tables 4/5); ``eapnet/variants.py`` records the measured figures.

    python -m eapnet.breakdown --variant standard     # per-module MAcc breakdown
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eapnet.metrics import DEFAULT_GAMMA as GAMMA  # the challenge's response: linear = encoded ** 2.24


_CHOICES = {
    "block": ("pdub", "drdb"),
    "align": ("off", "full", "half"),
    "attention": ("full", "half"),
    "upsample": ("bilinear", "conv"),
    "base": ("reference", "merge", "consistent"),   # what the residual adds to: medium frame, or a merge
}
BASES = _CHOICES["base"]
MAX_WIDTH = 4096
"""Most channels any width of a config may have: the paper's models are at most 160 wide and pruning only
narrows them, while one 1x1 conv of a 65,536-wide PDUB level holds 17 GB of fp32 weights. Checked before a
model is built (a checkpoint's config names it: ``eapnet.checkpoint.read_checkpoint``)."""
MAX_COUNT = 64
"""Most blocks (``num_blocks``) or dense layers (``drdb_layers``) a config may have: Table 2 goes to 5."""


@dataclass(frozen=True)
class EAPNetConfig:
    """One EAPNet variant: structure switches (Table 1 columns) and every channel width.

    Widths are channel counts; ``pdub_widths`` holds one ``(w1, w2, w3)`` row per progressive block:
    the widths of its encoder/decoder levels at 1/1, 1/2 and 1/4 of the restoration resolution.
    """

    name: str = "custom"
    multi_scale: bool = True            # Table 1 "MS": multi-scale encoder (else one 64-ch full-res conv)
    block: str = "pdub"                 # Table 1 "PDUB": progressive dilated U-blocks, or AHDR's DRDBs
    num_blocks: int = 3                 # Table 2: number of PDUBs (or DRDBs)
    share_weights: bool = False         # Table 1 "share": encoder/attention/alignment shared across frames
    align: str = "full"                 # Table 1 "align": off, full or half resolution
    attention: str = "full"             # exp. 7/8 halve the attention resolution together with alignment
    upsample: str = "bilinear"          # Table 1 "conv-up": transposed convs instead of bilinear
    enc_channels: int = 32              # C: per-scale encoder width (paper: 32 high + 32 low)
    feat_channels: int = 64             # F: restoration width (paper: 64 = concat of the two scales)
    pdub_widths: tuple[tuple[int, int, int], ...] = ((160, 72, 160),) * 3
    drdb_growth: int = 32               # AHDR's DRDB: growth rate and dense layers
    drdb_layers: int = 6
    tail_channels: int = 32             # width of the full-resolution tail after the long skip
    gamma: float = GAMMA
    base: str = "reference"             # what the residual is added to (``radiance_merge``, ``consistent_merge``)

    def __post_init__(self):
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"EAPNetConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("num_blocks", "enc_channels", "feat_channels", "drdb_growth", "drdb_layers",
                    "tail_channels"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EAPNetConfig.{key} must be a positive int, got {v!r}")
            bound = MAX_COUNT if key in ("num_blocks", "drdb_layers") else MAX_WIDTH
            if v > bound:
                raise ValueError(f"EAPNetConfig.{key} is {v:,}, more than any sane variant uses (at most {bound:,})")
        # Frozen dataclass: normalise lists (e.g. from JSON/YAML) to tuples so configs hash and compare.
        widths = tuple(tuple(int(w) for w in row) for row in self.pdub_widths)
        object.__setattr__(self, "pdub_widths", widths)
        if self.block == "pdub":
            if len(widths) != self.num_blocks:
                raise ValueError(f"EAPNetConfig.pdub_widths has {len(widths)} rows but num_blocks is "
                                 f"{self.num_blocks}: give one (w1, w2, w3) row per block")
            for row in widths:
                if len(row) != 3 or min(row) < 1:
                    raise ValueError(f"EAPNetConfig.pdub_widths rows must be three positive ints, got {row}")
                if max(row) > MAX_WIDTH:
                    raise ValueError(f"EAPNetConfig.pdub_widths row {row} has {max(row):,} channels, more than any "
                                     f"sane variant uses (at most {MAX_WIDTH:,})")
        if not (self.gamma > 0):
            raise ValueError(f"EAPNetConfig.gamma must be positive, got {self.gamma!r}")

    @property
    def pad_multiple(self) -> int:
        """H and W are padded to a multiple of this: restoration runs at 1/2, PDUB levels down to 1/8."""
        m = 2
        if self.multi_scale:
            m = 2 * (2 if self.align == "half" or self.attention == "half" else 1)  # low features at 1/4
        if self.block == "pdub":
            m = max(m, 8)
        return m

    def replace(self, **changes) -> "EAPNetConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain-Python form for checkpoints (``EAPNetConfig.from_dict`` inverts it)."""
        d = dataclasses.asdict(self)
        d["pdub_widths"] = [list(r) for r in self.pdub_widths]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EAPNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EAPNetConfig fields {unknown}")
        return cls(**d)


def with_blocks(cfg: EAPNetConfig, n: int, name: str | None = None) -> EAPNetConfig:
    """``cfg`` with ``n`` progressive blocks (drop from the end, or repeat the last block's widths)."""
    if n < 1:
        raise ValueError(f"need at least one block, got {n}")
    rows = list(cfg.pdub_widths[:n]) + [cfg.pdub_widths[-1]] * max(0, n - len(cfg.pdub_widths))
    return cfg.replace(num_blocks=n, pdub_widths=tuple(rows), name=name or f"{cfg.name}-{n}blocks")


# --------------------------------------------------------------------------------------------------
# Layers. Every conv but the first (encoder) and the last (output) is depthwise-separable (paper Sec. 3).
# ReLU, not AHDR's LeakyReLU: conv+ReLU fuses in XNNPACK and Core ML int8 kernels, and the paper is silent.


class DSConv(nn.Module):
    """Depthwise 3x3 (stride, dilation) then pointwise 1x1, both with bias, then optional ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, act: bool = True):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=dilation, dilation=dilation, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.pw(self.dw(x)))


class Up2(nn.Module):
    """x2 upsampling from ``cin`` to ``cout`` channels: a 1x1 conv then bilinear (the two commute, so the
    conv runs at the low resolution), or one 2x2 stride-2 transposed conv (Table 1 "conv-up")."""

    def __init__(self, cin: int, cout: int, mode: str, project: bool | None = None):
        super().__init__()
        self.bilinear = mode == "bilinear"
        if self.bilinear:
            # ``project``: whether bilinear mode has the 1x1 conv; by default only when widths differ. Pass it
            # where structure must not depend on widths being equal (a pruned model may make them equal).
            project = cin != cout if project is None else project
            self.conv = nn.Conv2d(cin, cout, 1) if project else nn.Identity()
        else:
            self.conv = nn.ConvTranspose2d(cin, cout, 2, stride=2)

    def forward(self, x):
        if self.bilinear:
            return _up(self.conv(x))
        return self.conv(x)


class FrameEncoder(nn.Module):
    """Multi-scale encoder (MSEnc, Eq. 3-5): standard 3x3 conv, high extractor at full resolution, low
    extractor (stride 2) at half resolution. Returns ``(f_high, f_low)``; naive mode returns ``(f, None)``."""

    def __init__(self, cfg: EAPNetConfig):
        super().__init__()
        c = cfg.enc_channels if cfg.multi_scale else cfg.feat_channels
        self.conv0 = nn.Conv2d(6, c, 3, padding=1)
        self.act0 = nn.ReLU()  # a module, not F.relu: eapnet.diagnostics finds every ReLU by its hooks
        self.multi_scale = cfg.multi_scale
        if cfg.multi_scale:
            self.high = DSConv(c, c)
            # Two convs for the low branch: the stride-2 one only resamples, the second extracts.
            self.low = nn.Sequential(DSConv(c, c, stride=2), DSConv(c, c))

    def forward(self, x):
        f = self.act0(self.conv0(x))
        if not self.multi_scale:
            return f, None
        h = self.high(f)
        return h, self.low(h)


class Attention(nn.Module):
    """AHDR-style attention: sigmoid(conv(concat(frame, reference))) gates the frame's features."""

    def __init__(self, c: int, half: bool):
        super().__init__()
        self.conv = DSConv(2 * c, c, act=False)
        self.half = half

    def forward(self, f, ref):
        return f * torch.sigmoid(_conv_at(self.conv, torch.cat([f, ref], 1), self.half))


class Alignment(nn.Module):
    """Feature alignment (paper ref. [32/33], SFT-style): from the reference and the frame predict a
    per-pixel scale and bias, ``f * (1 + scale) + bias``; ``half`` predicts them at half resolution."""

    def __init__(self, c: int, half: bool):
        super().__init__()
        self.conv = DSConv(2 * c, 2 * c, act=False)
        self.half = half
        self.register_buffer("one", torch.ones(1, 1, 1, 1), persistent=False)

    def forward(self, f, ref):
        # split with explicit sizes, not chunk: torch-pruning maps channels through split sizes only
        scale, bias = torch.split(_conv_at(self.conv, torch.cat([f, ref], 1), self.half), [f.shape[1]] * 2, 1)
        # The 1 as a 4-D constant: XNNPACK keeps a scalar's 0-d tensor in NCHW, so the add that took it
        # transposed the full-resolution scale out of NHWC and back (200 ms of 3.1 s of the 100 G standard's
        # fp32 .pte at 1900x1060, 48 ms of its int8 one). f * scale + f avoids the constant too, but lost
        # 0.017 dB of int8 PTQ PSNR-μ (held-out) where this form loses none.
        return f * (self.one + scale) + bias


def _up(x):
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _conv_at(conv: nn.Module, x: torch.Tensor, half: bool) -> torch.Tensor:
    """``conv(x)``, or at half resolution (2x2 average pool in, bilinear x2 out): a quarter of the MAccs."""
    return _up(conv(F.avg_pool2d(x, 2))) if half else conv(x)


class PDUB(nn.Module):
    """Progressive Dilated U-shape Block: a tiny UNet of 3 dilated encoder and 3 decoder levels
    (paper Sec. 3, Fig. 6) working at the restoration resolution, residual around the whole block.

    Levels 1/1, 1/2, 1/4 with widths ``(w1, w2, w3)``; strided depthwise convs downsample, dilations
    1, 2, 4 widen the receptive field; decoders concatenate the upsampled deeper level with the skip.
    """

    def __init__(self, c: int, widths: tuple[int, int, int], upsample: str):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = DSConv(c, w1, dilation=1)
        self.enc2 = DSConv(w1, w2, stride=2, dilation=2)
        self.enc3 = DSConv(w2, w3, stride=2, dilation=2)
        self.dec3 = DSConv(w3, w3, dilation=4)
        # The inner 1/4 -> 1/2 upsampling stays bilinear in both modes: "conv-up" puts the transposed conv
        # where the block returns to its working resolution. With one at the inner level too, the standard
        # model would carry ~4*w3^2 more weights per block, >20 % over the paper's 576 k parameters.
        self.up3 = Up2(w3, w3, "bilinear", project=False)
        self.dec2 = DSConv(w3 + w2, w2, dilation=2)
        self.up2 = Up2(w2, w2, upsample, project=False)
        self.dec1 = DSConv(w2 + w1, c, dilation=1, act=False)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d3 = self.dec3(self.enc3(e2))
        d2 = self.dec2(torch.cat([self.up3(d3), e2], 1))
        return x + self.dec1(torch.cat([self.up2(d2), e1], 1))


class DRDB(nn.Module):
    """AHDR's dilated residual dense block (dilation 2), with depthwise-separable convs (Table 1 exp. 1-2)."""

    def __init__(self, c: int, growth: int, layers: int):
        super().__init__()
        self.dense = nn.ModuleList(DSConv(c + i * growth, growth, dilation=2) for i in range(layers))
        self.fuse = nn.Conv2d(c + layers * growth, c, 1)

    def forward(self, x):
        feats = x
        for layer in self.dense:
            feats = torch.cat([feats, layer(feats)], 1)
        return x + self.fuse(feats)


class EAPNet(nn.Module):
    """EAPNet built from an :class:`EAPNetConfig`; see the module docstring for the interface."""

    def __init__(self, cfg: EAPNetConfig):
        super().__init__()
        self.config = cfg
        C, Fc = cfg.enc_channels, cfg.feat_channels
        n_frames = 1 if cfg.share_weights else 3
        n_side = 1 if cfg.share_weights else 2  # modules for the two non-reference frames
        self.encoders = nn.ModuleList(FrameEncoder(cfg) for _ in range(n_frames))
        scales = [C, C] if cfg.multi_scale else [Fc]
        half_att = cfg.attention == "half"
        # One module per (frame, scale) call site: weight sharing is the only reason to call one twice.
        self.attention = nn.ModuleList(
            nn.ModuleList(Attention(c, half_att) for c in scales) for _ in range(n_side))
        if cfg.align != "off":
            self.alignment = nn.ModuleList(
                nn.ModuleList(Alignment(c, cfg.align == "half") for c in scales) for _ in range(n_side))
        else:
            self.alignment = None
        if cfg.multi_scale:
            # High features go down to the restoration resolution by a strided conv, then both scales fuse.
            self.down = DSConv(3 * C, 3 * C, stride=2)
            self.merge = DSConv(6 * C, Fc)
        else:
            self.down = None
            self.merge = DSConv(3 * Fc, Fc, stride=2)
        if cfg.block == "pdub":
            self.blocks = nn.ModuleList(PDUB(Fc, w, cfg.upsample) for w in cfg.pdub_widths)
        else:
            self.blocks = nn.ModuleList(DRDB(Fc, cfg.drdb_growth, cfg.drdb_layers)
                                        for _ in range(cfg.num_blocks))
        # Global feature fusion over all block outputs, as AHDR fuses its DRDBs.
        self.gff = nn.Sequential(nn.Conv2d(cfg.num_blocks * Fc, Fc, 1), DSConv(Fc, Fc))
        skip_c = C if cfg.multi_scale else Fc
        self.up = Up2(Fc, skip_c, cfg.upsample, project=cfg.multi_scale)
        self.tail = DSConv(skip_c, cfg.tail_channels)
        self.out = nn.Conv2d(cfg.tail_channels, 3, 3, padding=1)
        init_weights(self)

    def forward(self, ldrs: torch.Tensor, evs: torch.Tensor) -> torch.Tensor:
        check_input_types(ldrs, evs)
        cfg = self.config
        H, W = ldrs.shape[-2], ldrs.shape[-1]
        x = pad_frames(ldrs, cfg.pad_multiple)                       # (B, 3, 3, Hp, Wp)
        y = self.residual(ev_align(x, evs, cfg.gamma))               # (B, 3, Hp, Wp)
        # Residual on a base image: the reference frame (right where the medium frame is well exposed) or
        # the radiance merge (right where nothing moves); the network learns the corrections.
        base = (radiance_merge(x, evs, cfg.gamma) if cfg.base == "merge" else
                consistent_merge(x, evs, cfg.gamma) if cfg.base == "consistent" else x[:, 1])
        hdr = F.relu(base + y)
        return hdr[..., :H, :W]

    def residual(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Every learned layer: the three ``(B, 6, Hp, Wp)`` EV-aligned inputs -> the ``(B, 3, Hp, Wp)``
        correction added to the base. Split from ``forward`` so that structured pruning (torch-pruning) can
        trace the layers alone, without the input preprocessing."""
        cfg = self.config
        feats = [self.encoders[0 if cfg.share_weights else i](inputs[i]) for i in range(3)]
        ref = feats[1]
        guided = []
        for i in (0, 2):
            side = 0 if cfg.share_weights else i // 2
            scales = []
            for s, (f, r) in enumerate(zip(feats[i], ref)):
                if f is None:
                    continue
                f = self.attention[side][s](f, r)
                if self.alignment is not None:
                    f = self.alignment[side][s](f, r)
                scales.append(f)
            guided.append(scales)
        high = torch.cat([guided[0][0], ref[0], guided[1][0]], 1)    # (B, 3C, Hp, Wp) or (B, 3F, ...)
        if cfg.multi_scale:
            # [down(high), low features of the three frames]; one flat cat (torch-pruning traces it)
            y = self.merge(torch.cat([self.down(high), guided[0][1], ref[1], guided[1][1]], 1))  # (B, F, ..)
        else:
            y = self.merge(high)
        outs = []
        for block in self.blocks:
            y = block(y)
            outs.append(y)
        y = self.gff(torch.cat(outs, 1))
        y = self.up(y) + ref[0]                        # long skip: reference features
        return self.out(self.tail(y))


def init_weights(model: "EAPNet") -> None:
    """He (Kaiming-normal, fan-in) weights with the gain of what follows each conv, zero biases, zero output conv.

    Why not PyTorch's default: its ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` weights shrink the signal ~3x per
    conv and its biases are as large as the weights, so after a few stacked depthwise-separable convs every
    ReLU sees a bias-dominated, nearly constant input: measured on held-out scenes, 1,285 of the standard
    model's 3,136 ReLU channels were zero everywhere at initialisation and the gradient reaching the PDUBs,
    alignment and attention was 1e-7..1e-9 of their weights (below Adam's eps), so they never trained. With
    this init: 23-28 dead channels and gradient ratios within an order of magnitude across module groups.

    - a conv followed by ReLU gets gain sqrt(2), one followed by a linear op (the depthwise conv inside a
      DSConv, the attention's sigmoid input, alignment, residual-branch ends, projections) gain 1;
    - a stride-2, 2x2 transposed conv sees ``cin`` inputs per output pixel, so its fan-in is ``cin``;
    - the output conv starts at zero: a fresh model returns its base (reference frame or radiance merge)
      and training learns the correction from there.
    """
    relu_fed = {id(m.pw) for m in model.modules() if isinstance(m, DSConv) and isinstance(m.act, nn.ReLU)}
    relu_fed |= {id(m.conv0) for m in model.modules() if isinstance(m, FrameEncoder)}
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            fan = m.in_channels // m.groups * (m.kernel_size[0] // m.stride[0]) * (m.kernel_size[1] // m.stride[1])
        elif isinstance(m, nn.Conv2d):
            fan = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            continue
        if m.weight.is_meta:  # shapes only (MAcc counting): nothing to draw, and drawing on meta is slow
            continue
        gain = math.sqrt(2.0) if id(m) in relu_fed else 1.0
        nn.init.normal_(m.weight, 0.0, gain / math.sqrt(fan))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    if not model.out.weight.is_meta:
        nn.init.zeros_(model.out.weight)
        nn.init.zeros_(model.out.bias)


def check_input_types(ldrs, evs) -> None:
    """TypeError / ValueError naming what is wrong with the model's inputs' types and shapes, before a
    deep layer fails on them. Only static properties (type, dtype, rank, frame count): ``forward`` stays
    free of data-dependent branches (values are checked by ``eapnet.inference.check_scene``)."""
    for name, t, rank in (("ldrs", ldrs, 5), ("evs", evs, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__} (eapnet.inference.predict "
                            "takes NumPy scenes)")
        if not t.is_floating_point() or t.dtype == torch.float64:
            raise TypeError(f"{name} must be float32 (or float16/bfloat16), got {t.dtype}"
                            + ("; 8-bit frames: ldrs.float() / 255" if t.dtype == torch.uint8 else ""))
        if t.dim() != rank:
            raise ValueError(f"{name} must be a {rank}-D tensor, got shape {tuple(t.shape)}")
    if ldrs.shape[1] != 3 or ldrs.shape[2] != 3:
        raise ValueError(f"ldrs must be (B, 3 frames, 3 channels, H, W), got {tuple(ldrs.shape)}")
    if tuple(evs.shape) != (ldrs.shape[0], 3):
        raise ValueError(f"evs must be (B, 3) stops for ldrs of batch {ldrs.shape[0]}, got {tuple(evs.shape)}")


def pad_frames(ldrs: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad ``(B, 3, 3, H, W)`` frames at the bottom/right to a multiple of ``multiple``."""
    if ldrs.dim() != 5 or ldrs.shape[1] != 3 or ldrs.shape[2] != 3:
        raise ValueError(f"ldrs must be (B, 3 frames, 3 channels, H, W), got {tuple(ldrs.shape)}")
    H, W = ldrs.shape[-2], ldrs.shape[-1]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph == 0 and pw == 0:
        return ldrs
    B = ldrs.shape[0]
    flat = ldrs.reshape(B, 9, H, W)
    return F.pad(flat, (0, pw, 0, ph), mode="replicate").reshape(B, 3, 3, H + ph, W + pw)


def ev_align(ldrs: torch.Tensor, evs: torch.Tensor, gamma: float = GAMMA) -> list[torch.Tensor]:
    """Eq. 2: per frame ``concat([I, I**gamma / 2**ev])``: the LDR and its linear, exposure-aligned version.

    ``ldrs`` (B, 3, 3, H, W) gamma-encoded in [0, 1]; ``evs`` (B, 3) stops relative to the medium frame.
    Returns three (B, 6, H, W) tensors.
    """
    if evs.dim() != 2 or evs.shape[1] != 3 or evs.shape[0] != ldrs.shape[0]:
        raise ValueError(f"evs must be (B, 3) with B = {ldrs.shape[0]}, got {tuple(evs.shape)}")
    lin = ldrs.clamp(0, 1) ** gamma / torch.exp2(evs.to(ldrs.dtype))[:, :, None, None, None]
    return [torch.cat([ldrs[:, i], lin[:, i]], 1) for i in range(3)]


def radiance_merge(ldrs: torch.Tensor, evs: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Classical HDR merge, the base the network corrects (Debevec & Malik's log-domain weighted mean).

    ``ldrs`` (B, 3, 3, H, W) gamma-encoded in [0, 1]; ``evs`` (B, 3) stops relative to the medium frame.
    Returns (B, 3, H, W) in the ground-truth domain (gamma-encoded, medium-frame units, > 0):
    ``exp(sum_i w_i log(x_i / 2**(ev_i / gamma)) / sum_i w_i)``, i.e. the gamma-encoded geometric mean of
    the exposure-aligned linear frames. ``w_i`` is the hat weight ``min(x, 1 - x) + 1/256`` averaged over
    the channels (as OpenCV's ``MergeDebevec``), and black is floored at half a code value (``log 0``).
    It equals ``eapnet.baselines.debevec`` with the known response up to 8-bit rounding (measured: PSNR-mu
    within 0.1 dB on the real crops and the held-out synthetic set). No parameters, no MAccs: elementwise.
    Why: the real low-key crops are best served by averaging the frames' noise, which a residual on
    the medium frame alone has to learn from scratch; frames are not aligned, so moving content ghosts
    and is left to the network (attention and alignment see the same frames).
    """
    x, w, logx = _merge_terms(ldrs, evs, gamma)
    return torch.exp((w * logx).sum(1) / w.sum(1))


def _merge_terms(ldrs: torch.Tensor, evs: torch.Tensor, gamma: float):
    """``(x, w, logx)`` of :func:`radiance_merge`: the clamped frames, their hat weights (B, 3, 1, H, W) and
    exposure-aligned log values (B, 3, 3, H, W)."""
    x = ldrs.clamp(0, 1)
    w = (torch.minimum(x, 1 - x) + 1 / 256).mean(2, keepdim=True)
    logx = torch.log(x.clamp_min(0.5 / 255)) - evs.to(x.dtype)[:, :, None, None, None] * (math.log(2) / gamma)
    return x, w, logx


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a ``k`` x ``k`` window (stride 1) of a ``(B, N, H, W)`` map, edges replicated (same size).

    Separable: a ``k`` x 1 mean, then 1 x ``k`` (2k adds per pixel instead of k²; the same mean up to float
    rounding). The two 9x9 boxes of :func:`consistent_merge` took 186 ms of the 1.66 s int8 program of the
    100 G standard at 1900x1060 (2 threads) as one pooling each."""
    x = F.pad(x, (k // 2,) * 4, mode="replicate")
    return F.avg_pool2d(F.avg_pool2d(x, (k, 1), 1), (1, k), 1)


def consistent_merge(ldrs: torch.Tensor, evs: torch.Tensor, gamma: float = GAMMA, *, tau: float = 0.35,
                     window: int = 9, noise: float = 3 / 255) -> torch.Tensor:
    """:func:`radiance_merge` that trusts the short and long frames only where they agree with the medium
    (reference) frame: a classical de-ghosting merge, the base for ``EAPNetConfig(base="consistent")``.

    Same inputs, output and weights as :func:`radiance_merge`, each side frame's weight multiplied by
    ``exp(-(max(|d| - n, 0) / tau) ** 2)``: ``d`` is the ``window`` x ``window`` local mean of the log ratio
    of that frame to the medium frame (natural log of the exposure-aligned gamma-encoded values, channel
    mean: one stop is ln 2 / 2.24 = 0.31, so a frame 1 stop off keeps 46 % of its weight, 2 stops off 4 %,
    4 stops off none), ``n`` the medium frame's noise in that mean (``noise`` gamma-encoded units per pixel,
    divided by the window side), so that noise does not reject a frame and a moved hand or a light that
    changed between exposures (a whole window off) does. Where the medium frame clips (any channel > 0.97) it
    is only a lower bound: a brighter side frame agrees there. Against the plain merge (``eapnet.baselines``;
    light ghosts on the real full-size NTIRE frame, PSNR-mu on the 4 real crops and 16 held-out synthetic 256²
    scenes): 0.015 vs 0.37 stops, 26.01 vs 24.78 dB and 25.83 vs 24.34 dB. No learned parameters: elementwise
    ops and two stride-1 average pools, which the MAcc count (learned layers) leaves out like the rest of the
    input processing."""
    # Written with ops XNNPACK delegates (no comparisons, where, amax or mid-tensor unsqueeze): steps are
    # clamped ramps, the noise division a tensor-by-tensor one.
    x, w, logx = _merge_terms(ldrs, evs, gamma)
    lum = logx.mean(2)                                                         # (B, 3, H, W)
    med = x[:, 1]                                                              # (B, 3, H, W)
    d = _box(torch.cat([lum[:, 0:1] - lum[:, 1:2], lum[:, 2:3] - lum[:, 1:2]], 1), window)  # short, long
    m = _box(med.mean(1, keepdim=True), window).clamp_min(1 / 255)            # local medium level
    dev = (d.abs() * m - noise / window).clamp_min(0.0) / m                    # |d| beyond the noise
    top = torch.maximum(torch.maximum(med[:, 0:1], med[:, 1:2]), med[:, 2:3])
    clipped = ((top - 0.97) * 1e4).clamp(0, 1)                                 # ~ top > 0.97
    c = torch.exp(-(dev * (1 - clipped * (d * 1e4).clamp(0, 1)) / tau) ** 2)  # a brighter side frame agrees
    one = c[:, 0:1] * 0 + 1                                                    # where the medium one clips
    c = torch.cat([c[:, 0:1], one, c[:, 1:2]], 1)                              # (B, 3, H, W)
    w = w * c.reshape(w.shape)
    return torch.exp((w * logx).sum(1) / w.sum(1))


# The paper's two models. PDUB widths (160, 72, 160) were fitted (grid search over the three widths) so that
# both land on the published MAccs and parameters at once; eapnet/variants.py records the measured figures.
_PDUB = (160, 72, 160)
# The shipped configurations add their residual to the de-ghosted merge (``base="consistent"``; the paper does
# not say what its network adds its output to). ``*_merge`` are the same networks on the plain radiance merge,
# the base the shipped weights were first trained on before their consistent-merge fine-tune (model cards).
LIGHTWEIGHT = EAPNetConfig(name="lightweight", num_blocks=3, pdub_widths=(_PDUB,) * 3, align="full",
                           attention="full", upsample="bilinear", base="consistent")
STANDARD = EAPNetConfig(name="standard", num_blocks=4, pdub_widths=(_PDUB,) * 4, align="half",
                        attention="half", upsample="conv", base="consistent")
VARIANTS: dict[str, EAPNetConfig] = {
    "standard": STANDARD, "lightweight": LIGHTWEIGHT,
    "standard_merge": STANDARD.replace(name="standard_merge", base="merge"),
    "lightweight_merge": LIGHTWEIGHT.replace(name="lightweight_merge", base="merge"),
}
