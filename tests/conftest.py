"""Shared test helpers: a tiny EAPNet config that runs in milliseconds."""
import pytest

from eapnet import EAPNetConfig

TINY = EAPNetConfig(name="tiny", num_blocks=2, pdub_widths=((8, 8, 8), (8, 8, 8)), enc_channels=4,
                    feat_channels=8, tail_channels=4)


@pytest.fixture
def tiny_config() -> EAPNetConfig:
    return TINY
