"""EAPNet training losses (NTIRE 2022, arXiv:2204.09213, Eq. 6-9).

``L = alpha * L_mu + beta * L_tanh`` with, by default, ``alpha = beta = 0.5``:

* ``L_mu`` (:func:`mu_law_l1`): L1 distance between the tanh-normalised μ-law tone maps of the
  prediction and the ground truth -- the very transform of the challenge's PSNR-μ
  (see :mod:`eapnet.metrics`): linearise with ``x ** 2.24``, divide by the per-image 99th percentile
  of the *linear ground truth* (a constant, no gradient), ``tanh``, ``log(1 + mu x) / log(1 + mu)``.
* ``L_tanh`` (:func:`tan_l1`): mean ``|tanh(pred) - tanh(gt)|`` on the gamma-encoded HDR, as
  HDRUNet's ``tanh_L1Loss`` (chxy95/HDRUNet, ``codes/models/customize_loss.py``).

All functions take NCHW (or CHW = one image) tensors in the *gamma-encoded* HDR domain of the NTIRE
ground truth (``png / alignratio``; >= 0, may exceed 1) and return a scalar tensor (mean over all
elements).  A shape mismatch raises ``ValueError`` naming both shapes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from eapnet.metrics import (
    _torch_pair,
    DEFAULT_GAMMA,
    DEFAULT_MU,
    DEFAULT_PERCENTILE,
    percentile_per_image_torch,
    tanh_norm_mu_tonemap_torch,
)

__all__ = ["mu_law_l1", "tan_l1", "eapnet_loss", "EAPNetLoss"]

# Floor applied before ``x ** gamma``: keeps negative network outputs out of a fractional power
# (NaN) and keeps the gradient finite at 0 even for gamma < 1.  (1e-8) ** 2.24 ~ 1e-18: negligible.
_LINEAR_EPS = 1e-8
# Floor for the per-image percentile normaliser (an all-black ground truth would divide by 0).
_NORM_EPS = 1e-6


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, fn: str):
    # half / bfloat16 (e.g. under autocast) come back as float32: pow/log/quantile need it
    pred, gt, _ = _torch_pair(pred, gt, fn, names=("pred", "gt"), check_finite=False)
    return pred, gt


def mu_law_l1(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mu: float = DEFAULT_MU,
    gamma: float = DEFAULT_GAMMA,
    percentile: float = DEFAULT_PERCENTILE,
) -> torch.Tensor:
    """μ-law L1 (paper's L_mu): ``mean |T(pred) - T(gt)|`` with the PSNR-μ transform ``T``.

    ``T(x) = log(1 + mu * tanh(x_lin / p)) / log(1 + mu)``, ``x_lin = max(x, 1e-8) ** gamma``,
    ``p`` = per-image ``percentile`` (linear interpolation, over C*H*W) of the linear ``gt``,
    detached and floored at 1e-6.

    Args:
        pred: network output, NCHW (or CHW), gamma-encoded HDR.  Negative values are floored at
            1e-8 before the power (finite values and gradients; zero gradient below the floor).
        gt: ground truth, same shape and domain.
        mu, gamma, percentile: 5000, 2.24, 99 -- the NTIRE PSNR-μ settings.

    Returns:
        Scalar tensor (dimensionless, tone-mapped units in [0, 1)).
    """
    pred, gt = _check_pair(pred, gt, "mu_law_l1")
    pred_lin = pred.clamp_min(_LINEAR_EPS).pow(gamma)
    gt_lin = gt.clamp_min(_LINEAR_EPS).pow(gamma)
    with torch.no_grad():
        norm = percentile_per_image_torch(gt_lin.detach(), percentile).clamp_min(_NORM_EPS)
    norm = norm.view(-1, 1, 1, 1)
    return F.l1_loss(
        tanh_norm_mu_tonemap_torch(pred_lin, norm, mu),
        tanh_norm_mu_tonemap_torch(gt_lin, norm, mu),
    )


def tan_l1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Tanh-L1 (paper's L_tanh): ``mean |tanh(pred) - tanh(gt)|`` on gamma-encoded HDR.

    Same definition as HDRUNet's ``tanh_L1Loss``
    (github.com/chxy95/HDRUNet, ``codes/models/customize_loss.py``:
    ``torch.mean(torch.abs(torch.tanh(x) - torch.tanh(y)))``).  Takes NCHW (or CHW) tensors;
    returns a scalar tensor.
    """
    pred, gt = _check_pair(pred, gt, "tan_l1")
    # HDRUNet, codes/models/customize_loss.py, class tanh_L1Loss
    return torch.mean(torch.abs(torch.tanh(pred) - torch.tanh(gt)))


def eapnet_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    *,
    mu: float = DEFAULT_MU,
    gamma: float = DEFAULT_GAMMA,
    percentile: float = DEFAULT_PERCENTILE,
) -> torch.Tensor:
    """EAPNet total loss ``alpha * mu_law_l1(pred, gt) + beta * tan_l1(pred, gt)`` (scalar).

    NCHW (or CHW) tensors in the gamma-encoded HDR domain; see :func:`mu_law_l1`, :func:`tan_l1`.
    """
    return alpha * mu_law_l1(pred, gt, mu=mu, gamma=gamma, percentile=percentile) + beta * tan_l1(
        pred, gt
    )


class EAPNetLoss(nn.Module):
    """Module form of :func:`eapnet_loss`: ``alpha * L_mu + beta * L_tanh`` (defaults 0.5 / 0.5).

    ``forward(pred, gt)`` takes NCHW (or CHW) gamma-encoded HDR tensors and returns a scalar.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        mu: float = DEFAULT_MU,
        gamma: float = DEFAULT_GAMMA,
        percentile: float = DEFAULT_PERCENTILE,
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.mu = float(mu)
        self.gamma = float(gamma)
        self.percentile = float(percentile)

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return eapnet_loss(
            pred,
            gt,
            self.alpha,
            self.beta,
            mu=self.mu,
            gamma=self.gamma,
            percentile=self.percentile,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, mu={self.mu}, gamma={self.gamma}, "
            f"percentile={self.percentile}"
        )
