"""Shared test helpers: a tiny EAPNet config that runs in milliseconds."""
import os

import pytest
import torch

from eapnet import EAPNetConfig

# Under pytest-xdist (./test.sh runs one worker per core) each worker takes its share of the cores: torch's
# default of one thread per core in every worker would oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

TINY = EAPNetConfig(name="tiny", num_blocks=2, pdub_widths=((8, 8, 8), (8, 8, 8)), enc_channels=4,
                    feat_channels=8, tail_channels=4)


@pytest.fixture
def tiny_config() -> EAPNetConfig:
    return TINY
