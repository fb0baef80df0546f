from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from mlcl.data import builtin
from mlcl.data.builtin import FRIEND_PAIRS, NUM_IMAGES, SOURCE_FRACTIONS, load_builtin, source_split
from mlcl.errors import ConfigError

SPLITS = ("train", "val", "test")
DIGIT_LABELS = load_digits().target  # independent copy of the source labels


@pytest.fixture(scope="module")
def sets() -> dict:
    return {s: load_builtin(s) for s in SPLITS}


def test_shapes_dtypes_ids(sets: dict) -> None:
    for split, s in sets.items():
        n = NUM_IMAGES[split]
        assert len(s) == n
        assert isinstance(s.items, np.ndarray) and s.items.dtype == np.uint8
        assert s.items.shape == (n, builtin.CANVAS_SIZE, builtin.CANVAS_SIZE, 3)
        assert s.class_names == [str(d) for d in range(10)]
        assert s.ids[0] == f"builtin/{split}/0" and s.ids[-1] == f"builtin/{split}/{n - 1}"
        assert s.targets.dtype == torch.int8 and s.targets.shape == (n, 10)
        assert set(torch.unique(s.targets).tolist()) == {0, 1}, "every entry of the builtin set is known"
        assert s.source == "builtin" and s.meta["split"] == split


def test_images_are_not_trivial(sets: dict) -> None:
    items = sets["val"].items.astype(np.float64)
    per_image_std = items.reshape(len(items), -1).std(axis=1)
    assert per_image_std.min() > 5.0
    assert not np.array_equal(items[0], items[1])
    colour_spread = np.abs(items[..., 0] - items[..., 1]).mean()
    assert colour_spread > 3.0, "canvases should be tinted, not grey"


def test_cached_sets_are_protected(sets: dict) -> None:
    s = sets["val"]
    with pytest.raises(ValueError):
        s.items[0, 0, 0, 0] = 1
    mine = load_builtin("val")
    mine.targets[0, 0] = 1 - mine.targets[0, 0]  # the caller's copy is its own
    assert torch.equal(load_builtin("val").targets, s.targets)
    assert not torch.equal(mine.targets, s.targets)


def test_deterministic_regeneration(sets: dict) -> None:
    images, targets, drawn = builtin._generate.__wrapped__("val")  # bypass the cache
    np.testing.assert_array_equal(images, sets["val"].items)
    np.testing.assert_array_equal(targets, sets["val"].targets.numpy())
    assert drawn == sets["val"].meta["instances"]


def test_source_digits_disjoint_and_stratified(sets: dict) -> None:
    parts = {s: set(sets[s].meta["source_indices"].tolist()) for s in SPLITS}
    assert not parts["train"] & parts["val"]
    assert not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"]
    assert parts["train"] | parts["val"] | parts["test"] == set(range(len(DIGIT_LABELS)))
    for digit in range(10):
        total = int((digit == DIGIT_LABELS).sum())
        for split, fraction in zip(SPLITS, SOURCE_FRACTIONS, strict=True):
            count = sum(DIGIT_LABELS[i] == digit for i in parts[split])
            assert abs(count - fraction * total) <= 1.0, (digit, split, count)
    assert np.array_equal(source_split("test"), sets["test"].meta["source_indices"])


def test_labels_equal_digits_drawn(sets: dict) -> None:
    for split, s in sets.items():
        allowed = set(s.meta["source_indices"].tolist())
        instances = s.meta["instances"]
        assert len(instances) == len(s)
        for i, sources in enumerate(instances):
            assert set(sources) <= allowed, f"{split}[{i}] uses a source digit of another split"
            assert len(set(sources)) == len(sources), "an instance repeated the same source image"
            digits = {int(DIGIT_LABELS[j]) for j in sources}
            assert set(np.flatnonzero(s.targets[i].numpy()).tolist()) == digits, f"{split}[{i}]"


def test_cardinality_and_duplicates(sets: dict) -> None:
    s = sets["train"]
    card = s.targets.sum(dim=1)
    assert int(card.min()) == 1 and int(card.max()) == 4
    counts = torch.bincount(card.long(), minlength=5)
    assert all(int(counts[k]) > 0 for k in range(1, 5))
    assert int(counts[1] + counts[2]) > 0.6 * len(s), "mostly 1-2 labels per image"
    instances = [len(x) for x in s.meta["instances"]]
    assert max(instances) == 4
    dup = sum(n > int(c) for n, c in zip(instances, card.tolist(), strict=True))
    assert dup > 0.05 * len(s), "some canvases should show a digit twice"


def test_every_class_present_in_every_split(sets: dict) -> None:
    for s in sets.values():
        prior = s.targets.float().mean(dim=0)
        assert float(prior.min()) > 0.08 and float(prior.max()) < 0.35


def test_friend_pairs_co_occur(sets: dict) -> None:
    y = np.concatenate([sets[s].targets.numpy() for s in SPLITS]).astype(np.float64)
    prior = y.mean(axis=0)
    for a, b in FRIEND_PAIRS:
        lift = (y[:, a] * y[:, b]).mean() / (prior[a] * prior[b])
        assert lift > 1.5, f"friend pair {a}+{b} has lift {lift:.2f}"
    friends = {d for pair in FRIEND_PAIRS for d in pair}
    others = [d for d in range(10) if d not in friends]
    a, b = others[0], others[1]
    assert (y[:, a] * y[:, b]).mean() / (prior[a] * prior[b]) < 1.5


def test_statistics_match_targets(sets: dict) -> None:
    stats = builtin.builtin_statistics("test")
    y = sets["test"].targets.numpy()
    assert stats["images"] == len(y)
    np.testing.assert_allclose(stats["prior"], y.mean(axis=0), atol=1e-4)
    assert stats["cardinality"] == {k: int((y.sum(axis=1) == k).sum()) for k in range(1, 5)}


def test_unknown_split() -> None:
    with pytest.raises(ConfigError, match="'validation'"):
        load_builtin("validation")


def test_the_digits_are_scikit_learns() -> None:
    """The digits read from scikit-learn's file equal ``load_digits()`` (images scaled to [0, 1])."""
    from mlcl.data.builtin import _digits

    reference = load_digits()
    images, labels = _digits()
    np.testing.assert_array_equal(images, (reference.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(labels, reference.target)
