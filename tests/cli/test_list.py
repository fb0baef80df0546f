"""``mlcl list``: the loss table is aligned, written for users, and true to the losses."""

from __future__ import annotations

import re

import pytest
import torch

from mlcl.cli import main
from mlcl.loss_catalog import LOSS_CATALOG
from mlcl.losses import LOSSES, build_loss
from mlcl.losses.base import PerImageState


def test_list_losses_is_an_aligned_table_of_every_loss(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[: lines.index("")]
    header, rows = table[0], table[1:]
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", header)]  # where each column after the first begins
    assert len(starts) == 3, header
    assert [row.split()[0] for row in rows] == list(LOSSES)  # every loss once, in the registry's order
    for row in rows:
        for s in starts:
            assert row[s - 2 : s] == "  " and row[s] != " ", (row, s)  # each column starts at the header's offset
    text = "\n".join(lines)
    # written for users: no class names, no reST markup, no "CLI name" notes
    for word in ("Loss(", "CLI name", "`", ":func:", "BCELoss"):
        assert word not in text, word


def test_the_catalogue_names_every_loss_of_the_registry() -> None:
    assert list(LOSS_CATALOG) == list(LOSSES)


def _gradient_on_unknowns(name: str) -> float | None:
    """The largest gradient of loss ``name`` on its unknown entries (a batch with one positive per row)."""
    loss = build_loss(name)
    if isinstance(loss, PerImageState):
        return None  # needs its per-image state (dataset indices): not an element-wise call
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    targets = torch.full((6, 5), -1)
    targets[torch.arange(6), torch.arange(6) % 5] = 1
    loss(logits, targets).backward()
    assert logits.grad is not None
    return float(logits.grad[targets == -1].abs().max())


@pytest.mark.parametrize("name", list(LOSSES))
def test_the_catalogue_says_which_losses_ignore_unknown_labels(name: str) -> None:
    """``ignored`` exactly for the losses whose gradient on unknown entries is zero."""
    grad = _gradient_on_unknowns(name)
    if grad is None:
        assert LOSS_CATALOG[name].unknown != "ignored"
        return
    assert (grad == 0.0) == (LOSS_CATALOG[name].unknown == "ignored"), (name, grad)
