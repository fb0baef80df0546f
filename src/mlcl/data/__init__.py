"""Datasets, missing-label protocols and transforms."""

from mlcl.data.dataset import ImageDataset
from mlcl.data.labelset import MultiLabelSet
from mlcl.data.missing import PROTOCOLS, apply_missing, parse_protocol
from mlcl.data.sources import DATASET_KINDS, load_dataset
from mlcl.data.transforms import build_transform

__all__ = [
    "DATASET_KINDS",
    "PROTOCOLS",
    "ImageDataset",
    "MultiLabelSet",
    "apply_missing",
    "build_transform",
    "load_dataset",
    "parse_protocol",
]
