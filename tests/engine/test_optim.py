from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlcl.engine.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups
from mlcl.models.factory import create_model


def _lrs(sched: torch.optim.lr_scheduler.LRScheduler, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_matches_torch_onecycle() -> None:
    total = 50
    p = [nn.Parameter(torch.zeros(1))]
    ref_opt = torch.optim.SGD(p, lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, max_lr=0.1, total_steps=total, pct_start=0.2, cycle_momentum=False
    )
    ours_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = build_scheduler(ours_opt, lr_multiplier("onecycle", total_steps=total, steps_per_epoch=10, pct_start=0.2))
    torch.testing.assert_close(torch.tensor(_lrs(ours, ours_opt, total)), torch.tensor(_lrs(ref, ref_opt, total)))


def test_cosine_with_warmup_formula() -> None:
    f = lr_multiplier("cosine", total_steps=100, steps_per_epoch=10, warmup_steps=10, min_ratio=0.0)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx((1 + math.cos(math.pi * 0.5)) / 2)
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_step_schedule() -> None:
    f = lr_multiplier("step", total_steps=100, steps_per_epoch=5, step_size_epochs=2, gamma=0.1)
    assert f(9) == 1.0 and f(10) == pytest.approx(0.1) and f(20) == pytest.approx(0.01)


def test_param_groups_split_rates_and_decay() -> None:
    model = create_model(
        "resnet10t", 3, head="mulcon", head_dim=16, head_heads=2, head_num_sab=1, proj_hidden=8, proj_dim=4
    )
    groups = param_groups(model, lr=1e-2, backbone_lr=1e-4, attention_lr=1e-3, weight_decay=0.05)
    by_name = {}
    for g in groups:
        by_name.setdefault(g["name"], []).append(g)
    assert {g["lr"] for g in by_name["backbone"]} == {1e-4}
    assert {g["lr"] for g in by_name["attention"]} == {1e-3}
    assert {g["lr"] for g in by_name["head"]} == {1e-2}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            no_decay = p.ndim <= 1 or names[id(p)].endswith(".bias")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), names[id(p)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_frozen_backbone_phase_keeps_backbone_weights() -> None:
    torch.manual_seed(0)
    model = create_model("resnet10t", 3)
    opt = build_optimizer(param_groups(model, lr=1e-2, weight_decay=0.1), "adamw")
    sched = build_scheduler(opt, lambda t: 1.0, freeze_backbone_steps=2)
    before = {
        k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.") and v.is_floating_point()
    }
    head_before = model.fc.weight.detach().clone()
    model.train()
    x = torch.randn(4, 3, 32, 32)
    for step in range(3):
        model(x).logits.sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        params = dict(model.named_parameters())
        moved = any(not torch.equal(params[k], before[k]) for k in params if k in before)
        assert moved == (step == 2), step  # frozen for the first two steps only
    assert not torch.equal(model.fc.weight, head_before)


def test_default_learning_rates_follow_the_backbone_origin() -> None:
    from mlcl.engine.build import resolved_learning_rates
    from mlcl.engine.config import load_config

    assert resolved_learning_rates(load_config(None, [])) == (2e-3, 2e-3)
    # the default fine-tuning recipe (probe-initialised head): one rate for everything
    assert resolved_learning_rates(load_config(None, ["model.weights=w.pth"])) == (2e-4, 2e-4)
    assert resolved_learning_rates(load_config(None, ["model.weights=w.pth", "optim.backbone_lr=1e-4"])) == (
        2e-4,
        1e-4,
    )
    # a randomly initialised head on a pretrained backbone: a high head rate, the backbone at a fiftieth
    assert resolved_learning_rates(load_config(None, ["model.weights=w.pth", "train.head_init=random"])) == (
        1e-2,
        2e-4,
    )
    assert resolved_learning_rates(load_config(None, ["model.pretrained=true", "optim.lr=1e-3"])) == (1e-3, 2e-5)


def test_boostlu_on_a_pretrained_backbone_gets_its_published_learning_rates() -> None:
    """BoostLU's official config.py:79 (lr 1e-5) with lr_mult 10 for the head: 1e-4 head, 1e-5 backbone."""
    from mlcl.engine.build import resolved_learning_rates
    from mlcl.engine.config import load_config

    def rates(*extra: str) -> tuple[float, float]:
        return resolved_learning_rates(load_config(None, ["loss.name=boostlu-ll-r", *extra]))

    assert rates("model.weights=w.pth") == (1e-4, 1e-5)
    assert rates("model.weights=w.pth", "loss.name=boostlu-ll-cp+clml") == (1e-4, 1e-5)
    assert rates("model.weights=w.pth", "train.head_init=random") == (1e-4, 1e-5)
    assert rates("model.weights=w.pth", "optim.lr=3e-4") == pytest.approx((3e-4, 3e-5))  # the backbone: a tenth
    assert rates("model.weights=w.pth", "optim.backbone_lr=2e-5") == (1e-4, 2e-5)
    assert rates("model.weights=w.pth", "loss.options={alpha: 1}") == (2e-4, 2e-4)  # no boost: the usual recipe
    assert rates() == (2e-3, 2e-3)  # from scratch: unchanged


@pytest.mark.parametrize(
    ("schedule", "kwargs", "fragment"),
    [
        ("onecycle", {"pct_start": 1.0}, "`pct_start` must lie in (0, 1), got 1.0"),
        ("onecycle", {"pct_start": 0.0}, "`pct_start`"),
        ("cosine", {"warmup_steps": -1}, "`warmup_steps` must be >= 0, got -1"),
        ("cosine", {"min_ratio": 1.5}, "`min_ratio` must lie in [0, 1], got 1.5"),
        ("step", {"gamma": 0.0}, "`gamma` must be a finite number > 0, got 0.0"),
        ("step", {"step_size_epochs": 0}, "`step_size_epochs` must be >= 1, got 0"),
        ("linear", {}, "`schedule` must be one of onecycle, cosine, step, constant, got 'linear'"),
    ],
)
def test_schedule_rejects_bad_arguments_when_built(schedule: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        lr_multiplier(schedule, total_steps=100, steps_per_epoch=10, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(e.value)


def test_schedule_checks_only_the_arguments_it_uses() -> None:
    assert lr_multiplier("constant", total_steps=10, steps_per_epoch=1, pct_start=5.0, gamma=-1.0)(3) == 1.0


@pytest.mark.parametrize(
    ("name", "kwargs", "fragment"),
    [
        ("rmsprop", {}, "`name` must be one of adam, adamw, sgd, got 'rmsprop'"),
        ("sgd", {"momentum": 1.0}, "`momentum` must lie in [0, 1), got 1.0"),
        ("adamw", {"betas": (0.9,)}, "`betas` must be two numbers in [0, 1), got [0.9]"),
        ("adam", {"betas": (0.9, 1.0)}, "`betas`"),
    ],
)
def test_optimizer_rejects_bad_arguments(name: str, kwargs: dict, fragment: str) -> None:
    groups = [{"params": [nn.Parameter(torch.zeros(1))]}]
    with pytest.raises(ValueError) as e:
        build_optimizer(groups, name, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(e.value)
