"""Every reader module exposes the same small interface (``SPLITS`` and ``read``) built on the shared steps."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mlcl.data import coco, folder, listfile, nuswide, voc
from mlcl.data._reader import check_choice, relative_id, targets_from_positives
from mlcl.errors import ConfigError


def test_every_reader_exposes_splits_and_read() -> None:
    for module in (coco, voc, nuswide, listfile, folder):
        assert "train" in module.SPLITS and "test" in module.SPLITS
        assert callable(module.read)
    assert callable(voc.read_voc2007) and callable(voc.read_voc2012)


def test_skeleton_steps() -> None:
    """The shared steps of data/_reader.py: option check, identifiers, targets from positive columns."""
    check_choice("merge", "name", ("auto", "name", "none"))
    with pytest.raises(ConfigError, match=r"^merge must be 'auto', 'name' or 'none', got 'x'$"):
        check_choice("merge", "x", ("auto", "name", "none"))
    with pytest.raises(ConfigError, match=r"^crowd must be 'positive' or 'ignore', got 3$"):
        check_choice("crowd", 3, ("positive", "ignore"))
    base = os.path.abspath("data")
    assert relative_id(os.path.join(base, "a", "b.jpg"), base) == "a/b.jpg"
    assert relative_id(os.path.abspath("elsewhere.jpg"), base) == os.path.abspath("elsewhere.jpg")
    expected = np.array([[1, -1, 1], [-1, -1, -1], [-1, 1, -1]], dtype=np.int8)
    got = targets_from_positives([[2, 0, 2], [], {1}], 3, fill=-1)
    assert got.dtype == np.int8 and np.array_equal(got, expected)
