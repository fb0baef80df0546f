"""The training objective: term composition, the stateful-loss contract, and one gather per step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mlcl.engine.objective as objective_module
from mlcl.engine.objective import Objective
from mlcl.losses import CLML, BCELoss, ImageSupConLoss, LabelSupConLoss, MultiLabelLoss
from mlcl.losses import functional as LF
from mlcl.losses.base import PerImageState
from mlcl.models.classifier import ModelOutput

N, C, D, P = 6, 4, 5, 3


def _out(label_level: bool = False) -> ModelOutput:
    g = torch.Generator().manual_seed(3)
    proj = torch.randn(N, C, P, generator=g) if label_level else torch.randn(N, P, generator=g)
    return ModelOutput(
        logits=torch.randn(N, C, generator=g, dtype=torch.float64).requires_grad_(),
        embedding=torch.randn(N, D, generator=g, dtype=torch.float64).requires_grad_(),
        proj=nn.functional.normalize(proj.double(), dim=-1).requires_grad_(),
    )


def _targets() -> Tensor:
    return torch.tensor([[1, 0, -1, 0], [0, 1, 1, -1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 0, 0, 1], [1, -1, -1, 0]])


def test_terms_sum_with_their_weights() -> None:
    out, y = _out(), _targets()
    clml = CLML(tau=0.6, lam=0.7)
    clml.set_epoch(1)
    obj = Objective(BCELoss(), clml=clml, contrastive=ImageSupConLoss(tau=0.3, base_tau=0.3), contrastive_weight=0.25)
    terms = obj(out, y)
    assert set(terms) == {"base", "clml", "contrastive", "loss"}
    base = LF.binary_cross_entropy(out.logits, y)
    clml_value = LF.clml(out.embedding, out.logits.detach(), y, tau=0.6, lam=0.7, correct=True)
    con = LF.image_supcon(out.proj, y, tau=0.3, base_tau=0.3)
    torch.testing.assert_close(terms["base"], base.float())
    torch.testing.assert_close(terms["clml"], clml_value.float())
    torch.testing.assert_close(terms["contrastive"], con.float())
    torch.testing.assert_close(terms["loss"], (base + clml_value + 0.25 * con).float())


def test_terms_are_float32_and_clml_sends_nothing_to_the_logits() -> None:
    out, y = _out(), _targets()
    obj = Objective(BCELoss(), clml=CLML(lam=1.0))
    terms = obj(out, y)
    assert all(v.dtype == torch.float32 for v in terms.values())
    terms["clml"].backward()
    assert out.logits.grad is None and out.embedding.grad is not None


def test_label_level_contrast_gets_the_detached_logits() -> None:
    out, y = _out(label_level=True), _targets()
    obj = Objective(BCELoss(), contrastive=LabelSupConLoss(denominator_size=2), contrastive_weight=1.0)
    terms = obj(out, y)
    expected = LF.label_supcon(out.proj.float(), y, denominator_size=2, logits=out.logits.detach().float())
    torch.testing.assert_close(terms["contrastive"], expected)
    terms["contrastive"].backward()
    assert out.logits.grad is None  # the fillers are chosen by the logits, without gradient


def test_contrastive_needs_projections() -> None:
    out = _out()._replace(proj=None)
    with pytest.raises(ValueError, match="projections"):
        Objective(BCELoss(), contrastive=ImageSupConLoss())(out, _targets())


class _Recorder(PerImageState, MultiLabelLoss):
    """A stateful loss that flips target (row, 0) to positive at the end of an epoch, and records its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.scale = nn.Parameter(torch.ones(()))

    def init_state(self, train_targets: Tensor, *, seed: int) -> None:
        self.register_buffer("table", train_targets.clone())
        self.calls.append(("init", seed))

    def current_targets(self, targets: Tensor, index: Tensor) -> Tensor:
        return self.table[index].to(targets)

    def forward(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:  # type: ignore[override]
        self.calls.append(("forward", (targets.clone(), index.clone())))
        return self.scale * LF.binary_cross_entropy(logits, targets)

    def end_epoch(self) -> None:
        self.table[:, 0] = 1
        self.calls.append(("end", None))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [self.scale], "lr": 10 * lr, "name": "recorder"}]


def test_stateful_loss_contract_is_driven_by_the_objective() -> None:
    train_targets = torch.tensor([[0, 0, 1, -1]] * 10, dtype=torch.float32)
    rec = _Recorder()
    clml = CLML(tau=0.9)
    obj = Objective(rec, clml=clml)
    obj.init_state(train_targets, seed=7)
    assert rec.calls == [("init", 7)]
    assert obj.param_groups(0.5) == [{"params": [rec.scale], "lr": 5.0, "name": "recorder"}]
    obj.begin_epoch(2)
    assert clml.epoch == 2
    index = torch.tensor([3, 1, 4, 1, 5, 9])
    out = _out()
    with pytest.raises(ValueError, match="dataset indices"):
        obj(out, _targets())
    obj(out, _targets(), index)
    _, (seen, seen_index) = rec.calls[-1]
    assert torch.equal(seen_index, index)
    assert torch.equal(seen, train_targets[index])  # the loss's table, not the loader's targets
    obj.end_epoch()
    obj(out, _targets(), index)
    assert bool((rec.calls[-1][1][0][:, 0] == 1).all())  # the corrections reach every term from the next epoch
    assert "base.table" in obj.state_dict() and "base.scale" in obj.state_dict()


def test_state_is_the_objectives_state_dict() -> None:
    rec = _Recorder()
    obj = Objective(rec)
    obj.init_state(torch.zeros(4, C), seed=0)
    obj.end_epoch()
    other = Objective(_Recorder())
    other.init_state(torch.zeros(4, C), seed=0)
    other.load_state_dict(obj.state_dict())
    assert torch.equal(other.base.table, rec.table)


def test_one_gather_per_tensor_under_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLML + label SupCon on the global batch: logits, targets, embedding and projections cross once each."""
    calls: list[tuple[str, tuple[int, ...]]] = []

    def with_grad(x: Tensor) -> Tensor:
        calls.append(("grad", tuple(x.shape)))
        return torch.cat([x, x.detach().clone()])  # a second rank holding a copy of the rows

    def no_grad(x: Tensor) -> Tensor:
        calls.append(("nograd", tuple(x.shape)))
        return torch.cat([x, x]).detach()

    monkeypatch.setattr(objective_module, "is_distributed", lambda: True)
    monkeypatch.setattr(objective_module, "gather_with_grad", with_grad)
    monkeypatch.setattr(objective_module, "all_gather_nograd", no_grad)
    import mlcl.distributed as dist_module

    monkeypatch.setattr(dist_module, "is_distributed", lambda: True)  # a loss that gathers again would fail here
    obj = Objective(BCELoss(), clml=CLML(), contrastive=LabelSupConLoss())
    out = _out(label_level=True)
    terms = obj(out, _targets(), torch.arange(N))
    assert sorted(calls) == sorted([("grad", (N, C)), ("nograd", (N, C)), ("grad", (N, D)), ("grad", (N, C, P))])
    y2 = torch.cat([_targets(), _targets()])
    expected = LF.binary_cross_entropy(torch.cat([out.logits, out.logits]), y2)
    torch.testing.assert_close(terms["base"], expected.float())


def test_losses_know_nothing_of_processes() -> None:
    """The objective is the one place that gathers the training batch: no loss module imports a gather."""
    import importlib
    import pkgutil

    import mlcl.losses

    for info in pkgutil.iter_modules(mlcl.losses.__path__):
        module = importlib.import_module(f"mlcl.losses.{info.name}")
        for name in ("gather_with_grad", "all_gather_nograd", "is_distributed"):
            assert not hasattr(module, name), f"mlcl.losses.{info.name} uses {name}"


def test_scores_of_the_training_images_are_required_only_when_the_loss_wants_them() -> None:
    from mlcl.losses import BCELoss
    from mlcl.losses.base import PerImageState

    class Picky(PerImageState, BCELoss):
        needs_train_scores = True
        due = False

        def __init__(self) -> None:
            super().__init__()
            self.got: list[torch.Tensor] = []
            self.ended = 0

        def wants_train_scores(self) -> bool:
            return self.due

        def observe_train_scores(self, scores: torch.Tensor) -> None:
            self.got.append(scores)

        def end_epoch(self) -> None:
            self.ended += 1

    loss = Picky()
    obj = Objective(loss)
    assert obj.needs_train_scores and not obj.wants_train_scores()
    obj.end_epoch()  # not due: no pass, no scores needed
    assert loss.got == [] and loss.ended == 1
    loss.due = True
    with pytest.raises(ValueError, match="needs the scores of the training images"):
        obj.end_epoch()
    scores = torch.rand(5, 3)
    obj.end_epoch(train_scores=scores)
    assert loss.got == [scores] and loss.ended == 2
    assert not Objective(BCELoss()).needs_train_scores and not Objective(BCELoss()).wants_train_scores()
