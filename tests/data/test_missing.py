from __future__ import annotations

import math

import pytest
import torch

from mlcl.data.missing import PROTOCOLS, MissingProtocol, apply_missing, parse_protocol, summarize
from mlcl.errors import ConfigError

KEEP_RULES = {
    "single-positive": lambda n: min(n, 1),
    "keep-half-plus-one": lambda n: min(n, n // 2 + 1),
    "keep-fifth-plus-one": lambda n: min(n, n // 5 + 1),
}
ALL_SPECS = ["none", "drop:0.3", "single-positive", "keep-half-plus-one", "keep-fifth-plus-one", "partial:0.4"]


def random_targets(n: int = 400, c: int = 12, seed: int = 0, unknown: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, c, generator=g) < 0.3).to(torch.int8)
    y[torch.rand(n, c, generator=g) < unknown] = -1
    y[0] = 0  # an image without any positive
    y[1] = 1  # an image where every class is positive
    return y


def binomial_ok(count: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    sd = math.sqrt(trials * p * (1 - p))
    return abs(count - trials * p) <= sigmas * sd + 1


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_never_creates_information(spec: str) -> None:
    y = random_targets()
    before = y.clone()
    out = apply_missing(y, spec, seed=3)
    assert torch.equal(y, before), "input was modified"
    assert out.dtype == torch.int8 and out.shape == y.shape
    changed = out != y
    assert bool((out[changed] == -1).all()), "an entry changed to something other than -1"
    assert bool((out[y == -1] == -1).all()), "an unknown entry became known"
    assert not bool(((out == 1) & (y != 1)).any()), "a new positive appeared"
    assert not bool(((out == 0) & (y != 0)).any()), "a new negative appeared"


@pytest.mark.parametrize("spec", ALL_SPECS[1:])
def test_deterministic_and_seed_dependent(spec: str) -> None:
    y = random_targets()
    a = apply_missing(y, spec, seed=7)
    assert torch.equal(a, apply_missing(y.clone(), spec, seed=7))
    assert not torch.equal(a, apply_missing(y, spec, seed=8))


def test_global_rng_untouched() -> None:
    y = random_targets()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    apply_missing(y, "partial:0.5", seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_none_is_identity_and_accepts_float() -> None:
    y = random_targets()
    assert torch.equal(apply_missing(y.float(), "none", seed=0), y)
    assert torch.equal(apply_missing(y.double(), "drop:0.5", seed=4), apply_missing(y, "drop:0.5", seed=4))


@pytest.mark.parametrize("spec", list(KEEP_RULES))
def test_keep_protocols_exact_counts(spec: str) -> None:
    y = random_targets(n=300, c=15)
    out = apply_missing(y, spec, seed=11)
    rule = KEEP_RULES[spec]
    for i in range(y.shape[0]):
        n_pos = int((y[i] == 1).sum())
        kept = out[i] == 1
        assert int(kept.sum()) == rule(n_pos), f"row {i}: {n_pos} positives, kept {int(kept.sum())}"
        assert bool((y[i][kept] == 1).all())
        assert bool((out[i][~kept] == -1).all()), f"row {i}: an entry other than a kept positive is known"
    assert bool((out[0] == -1).all())  # the row without positives keeps nothing


@pytest.mark.parametrize(
    ("spec", "n_pos"), [("single-positive", 5), ("keep-half-plus-one", 5), ("keep-fifth-plus-one", 7)]
)
def test_keep_choice_is_uniform(spec: str, n_pos: int) -> None:
    rows, c = 3000, 8
    y = torch.zeros(rows, c, dtype=torch.int8)
    y[:, :n_pos] = 1
    out = apply_missing(y, spec, seed=5)
    k = KEEP_RULES[spec](n_pos)
    counts = (out[:, :n_pos] == 1).sum(dim=0)
    for j in range(n_pos):
        assert binomial_ok(int(counts[j]), rows, k / n_pos), f"positive {j} kept {int(counts[j])} times of {rows}"


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_drop_rate_within_binomial_tolerance(rate: float) -> None:
    y = random_targets(n=2000, c=10, unknown=0.0)
    out = apply_missing(y, f"drop:{rate}", seed=2)
    pos = y == 1
    hidden = int((pos & (out == -1)).sum())
    assert binomial_ok(hidden, int(pos.sum()), rate)
    assert torch.equal(out[y == 0], y[y == 0]), "drop must keep every negative"


def test_drop_extremes() -> None:
    y = random_targets()
    assert torch.equal(apply_missing(y, "drop:0", seed=0), y)
    full = apply_missing(y, "drop:1", seed=0)
    assert not bool((full == 1).any())
    assert torch.equal(full[y == 0], y[y == 0])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_partial_fraction_within_binomial_tolerance(p: float) -> None:
    y = random_targets(n=2000, c=10, unknown=0.0)
    out = apply_missing(y, f"partial:{p}", seed=9)
    for value in (1, 0):
        mask = y == value
        kept = int((mask & (out == value)).sum())
        assert binomial_ok(kept, int(mask.sum()), p), f"value {value}: kept {kept} of {int(mask.sum())}"


def test_partial_one_keeps_everything() -> None:
    y = random_targets()
    assert torch.equal(apply_missing(y, "partial:1", seed=0), y)
    assert bool((apply_missing(y, "partial:0", seed=0) == -1).all())


@pytest.mark.parametrize("bad", ["drop:1.5", "drop:x", "nonsense", "drop", "partial:-0.1", "partial:nan", "none:2", ""])
def test_bad_specs_raise_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_protocol(bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ConfigError):
        apply_missing(random_targets(), bad, seed=0)


def test_parse_forms() -> None:
    assert parse_protocol(" Drop:0.25 ") == MissingProtocol("drop", 0.25)
    assert parse_protocol("single_positive") == MissingProtocol("single-positive")
    assert parse_protocol("partial:0.5").spec == "partial:0.5"
    names = {key.split(":")[0] for key in PROTOCOLS}
    assert names == {"none", "drop", "single-positive", "keep-half-plus-one", "keep-fifth-plus-one", "partial"}


def test_bad_targets_raise() -> None:
    with pytest.raises(ValueError):
        apply_missing(torch.tensor([[2, 0]]), "none", seed=0)
    with pytest.raises(TypeError):
        apply_missing([[1, 0]], "none", seed=0)  # type: ignore[arg-type]


def test_summarize_counts_by_hand() -> None:
    before = torch.tensor([[1, 1, 0, -1], [0, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.int8)
    after = torch.tensor([[1, -1, 0, -1], [0, -1, -1, 0], [-1, -1, 1, -1]], dtype=torch.int8)
    s = summarize(before, after)
    assert s["images"] == 3 and s["classes"] == 4
    assert s["positives_before"] == 6 and s["positives_kept"] == 2
    assert s["positives_kept_fraction"] == pytest.approx(2 / 6)
    assert s["negatives_before"] == 5 and s["negatives_kept"] == 3
    assert s["unknown_before"] == 1 and s["unknown"] == 7
    assert s["images_with_positive"] == 2
    assert s["positives_per_class_before"] == [2, 2, 1, 1]
    assert s["positives_per_class_kept"] == [1, 0, 1, 0]
    with pytest.raises(ValueError):
        summarize(before, after[:2])
