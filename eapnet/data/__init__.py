"""Datasets: the one scene type and its sources, NTIRE / Kalantari readers and writers, the synthetic generator,
training patches, augmentation."""

import os
from pathlib import Path

from .errors import DataError, MissingFileError
from .kalantari import KalantariSource, list_kalantari_scenes, read_kalantari
from .ntire import (
    NtireSample,
    NtireSource,
    list_ntire_ids,
    load_ntire_sample,
    ntire_frame_size,
    read_ntire,
    save_ntire_sample,
    write_ntire,
    write_ntire_hdr,
)
from .patches import (
    PatchDataset,
    augment,
    patch_grid,
    scene_sources_from_folder,
    scene_to_tensors,
)
from .scene import EV_SPAN, Scene, SceneSource, as_sources, check_exposures
from .synthetic import HELDOUT_SEED, TRAIN_SEED, SyntheticConfig, SyntheticSource, generate_scene


def _shared_samples() -> Path:
    """Where the real challenge samples live (read, never copied): ``$EAPNET_SAMPLES`` when set, else
    ``../shared/data/ntire_samples`` beside the source checkout, else beside the current directory (an
    installed package has no checkout around it)."""
    if os.environ.get("EAPNET_SAMPLES"):
        return Path(os.environ["EAPNET_SAMPLES"]).expanduser()
    rel = Path("shared") / "data" / "ntire_samples"
    for root in (Path(__file__).resolve().parents[2].parent, Path.cwd().resolve().parent):
        if (root / rel).is_dir():
            return root / rel
    return Path.cwd().resolve().parent / rel


SHARED_SAMPLES = _shared_samples()

__all__ = [
    "SHARED_SAMPLES",
    "DataError",
    "MissingFileError",
    "EV_SPAN",
    "Scene",
    "SceneSource",
    "as_sources",
    "check_exposures",
    "NtireSource",
    "KalantariSource",
    "SyntheticSource",
    "NtireSample",
    "load_ntire_sample",
    "save_ntire_sample",
    "read_ntire",
    "write_ntire",
    "write_ntire_hdr",
    "list_ntire_ids",
    "ntire_frame_size",
    "read_kalantari",
    "list_kalantari_scenes",
    "patch_grid",
    "augment",
    "scene_to_tensors",
    "PatchDataset",
    "scene_sources_from_folder",
    "SyntheticConfig",
    "generate_scene",
    "TRAIN_SEED",
    "HELDOUT_SEED",
]
