"""Datasets: NTIRE / Kalantari readers and writers, the synthetic generator, training patches, augmentation."""

from pathlib import Path

from .errors import DataError, MissingFileError
from .kalantari import list_kalantari_scenes, read_kalantari
from .ntire import (
    NtireSample,
    list_ntire_ids,
    load_ntire_sample,
    ntire_frame_size,
    read_ntire,
    save_ntire_sample,
    write_ntire,
    write_ntire_hdr,
)
from .patches import (
    KalantariFolderDataset,
    NtireFolderDataset,
    PatchDataset,
    augment,
    augment_inverse,
    load_scene,
    patch_grid,
    scene_sources_from_folder,
    scene_to_tensors,
)
from .synthetic import HELDOUT_SEED, TRAIN_SEED, SyntheticConfig, SyntheticDataset, generate_scene

# Where the real challenge samples live: ../shared/data/ntire_samples beside the checkout (read, never copied).
SHARED_SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ntire_samples"

__all__ = [
    "SHARED_SAMPLES",
    "DataError",
    "MissingFileError",
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
    "augment_inverse",
    "load_scene",
    "scene_to_tensors",
    "PatchDataset",
    "NtireFolderDataset",
    "KalantariFolderDataset",
    "scene_sources_from_folder",
    "SyntheticConfig",
    "SyntheticDataset",
    "generate_scene",
    "TRAIN_SEED",
    "HELDOUT_SEED",
]
