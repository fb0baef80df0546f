"""Every reader module exposes the same small interface (``SPLITS`` and ``read``)."""

from __future__ import annotations

from mlcl.data import coco, folder, listfile, nuswide, voc


def test_every_reader_exposes_splits_and_read() -> None:
    for module in (coco, voc, nuswide, listfile, folder):
        assert "train" in module.SPLITS and "test" in module.SPLITS
        assert callable(module.read)
    assert callable(voc.read_voc2007) and callable(voc.read_voc2012)
