"""The contract every ``LOSSES`` entry keeps: the element-wise losses against the naive float64 references in
``tests/helpers/references/naive_losses.py``, reductions, dtypes, validation, the registry."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, get_args

import pytest
import torch

import mlcl.losses as L
from mlcl.losses import functional as LF
from mlcl.losses.base import PerImageState
from tests.helpers.losses import REDUCTIONS, loss_case
from tests.helpers.references import naive_losses as NV

Naive = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]


# name, CLI name, constructor kwargs, epoch (None: no set_epoch), naive reference
SPECS: list[tuple[str, str, dict[str, Any], int | None, Naive]] = [
    ("bce", "bce", {}, None, lambda z, y, r: NV.bce(z, y, "ignore", r)),
    ("bce-an", "bce-an", {}, None, lambda z, y, r: NV.bce(z, y, "negative", r)),
    ("bce-clamp", "bce-an", {"clamp_eps": 1e-3}, None, lambda z, y, r: NV.bce(z, y, "negative", r, 1e-3)),
    ("bce-ignore-clamp", "bce", {"clamp_eps": 1e-3}, None, lambda z, y, r: NV.bce(z, y, "ignore", r, 1e-3)),
    ("wan", "wan", {}, None, lambda z, y, r: NV.wan(z, y, None, r)),
    ("wan-gamma", "wan", {"gamma": 0.3}, None, lambda z, y, r: NV.wan(z, y, 0.3, r)),
    ("epr", "epr", {"expected_num_pos": 1.5}, None, lambda z, y, r: NV.epr(z, y, 1.5, r)),
    ("focal", "focal", {}, None, lambda z, y, r: NV.focal(z, y, 2.0, "negative", r)),
    (
        "focal-ignore",
        "focal",
        {"gamma": 1.5, "unknown": "ignore"},
        None,
        lambda z, y, r: NV.focal(z, y, 1.5, "ignore", r),
    ),
    ("asl", "asl", {}, None, lambda z, y, r: NV.asl(z, y, 4.0, 1.0, 0.05, 1e-8, "negative", r)),
    (
        "asl-ignore",
        "asl",
        {"gamma_pos": 0.0, "clip": 0.2, "eps": 1e-3, "unknown": "ignore"},
        None,
        lambda z, y, r: NV.asl(z, y, 4.0, 0.0, 0.2, 1e-3, "ignore", r),
    ),
    (
        "asl-noclip",
        "asl",
        {"clip": 0.0, "eps": None},
        None,
        lambda z, y, r: NV.asl(z, y, 4.0, 1.0, 0.0, None, "negative", r),
    ),
    ("hill", "hill", {}, None, lambda z, y, r: NV.hill(z, y, 1.5, 1.0, 2.0, "negative", r)),
    (
        "hill-ignore",
        "hill",
        {"margin": 0.5, "gamma": 1.0, "unknown": "ignore"},
        None,
        lambda z, y, r: NV.hill(z, y, 1.5, 0.5, 1.0, "ignore", r),
    ),
    ("splc-epoch0", "splc", {}, 0, lambda z, y, r: NV.splc(z, y, 0.6, 1.0, 2.0, False, r)),
    ("splc-epoch1", "splc", {"tau": 0.3}, 1, lambda z, y, r: NV.splc(z, y, 0.3, 1.0, 2.0, True, r)),
    (
        "splc-late-start",
        "splc",
        {"tau": 0.3, "start_epoch": 3},
        2,
        lambda z, y, r: NV.splc(z, y, 0.3, 1.0, 2.0, False, r),
    ),
    ("ll-r-epoch0", "ll-r", {"delta_rel": 0.1}, 0, lambda z, y, r: NV.large_loss(z, y, 0.0, "reject", r)),
    ("ll-r-epoch2", "ll-r", {"delta_rel": 0.1}, 2, lambda z, y, r: NV.large_loss(z, y, 0.2, "reject", r)),
    ("ll-ct-epoch3", "ll-ct", {"delta_rel": 0.1}, 3, lambda z, y, r: NV.large_loss(z, y, 0.3, "correct", r)),
    ("ll-cp-epoch0", "ll-cp", {"delta_rel": 0.1}, 0, lambda z, y, r: NV.large_loss(z, y, 0.0, "correct", r)),
    ("ll-cp-epoch4", "ll-cp", {"delta_rel": 0.1}, 4, lambda z, y, r: NV.large_loss(z, y, 0.1, "correct", r)),
]


def _build(cli: str, kwargs: dict[str, Any], epoch: int | None, reduction: str) -> L.MultiLabelLoss:
    loss = L.build_loss(cli, reduction=reduction, **kwargs)
    if epoch is not None:
        loss.set_epoch(epoch)  # type: ignore[attr-defined]
    return loss


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "cli", "kwargs", "epoch", "naive"), SPECS, ids=[s[0] for s in SPECS])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_reference(
    name: str, cli: str, kwargs: dict[str, Any], epoch: int | None, naive: Naive, reduction: str, seed: int
) -> None:
    logits, targets = loss_case(seed, scale=6.0 if "clamp" in name else 3.0)
    z_ours = logits.clone().requires_grad_()
    z_ref = logits.clone().requires_grad_()
    ours = _build(cli, kwargs, epoch, reduction)(z_ours, targets)
    ref = naive(z_ref, targets, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    weights = torch.rand(ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(z_ours.grad, z_ref.grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize(
    ("cli", "kwargs"),
    [("bce", {}), ("focal", {"unknown": "ignore"}), ("asl", {"unknown": "ignore"}), ("hill", {"unknown": "ignore"})],
)
def test_ignored_unknowns_get_exactly_zero_gradient(cli: str, kwargs: dict[str, Any]) -> None:
    logits, targets = loss_case(3, n=6, c=5)
    for reduction in REDUCTIONS:
        z = logits.clone().requires_grad_()
        out = L.build_loss(cli, reduction=reduction, **kwargs)(z, targets)
        out.sum().backward()
        assert z.grad is not None
        assert torch.all(z.grad[targets == -1] == 0)
        if cli == "bce":  # (ASL's clip legitimately zeroes the gradient of confident negatives)
            assert torch.all(z.grad[targets != -1] != 0)
        # and the value does not depend on the logits at unknown entries
        moved = logits.clone()
        moved[targets == -1] += 5.0
        torch.testing.assert_close(L.build_loss(cli, reduction=reduction, **kwargs)(moved, targets), out.detach())


@pytest.mark.parametrize(("name", "cli", "kwargs", "epoch", "naive"), SPECS, ids=[s[0] for s in SPECS])
def test_reductions_are_consistent(
    name: str, cli: str, kwargs: dict[str, Any], epoch: int | None, naive: Naive
) -> None:
    logits, targets = loss_case(8, n=6, c=5)
    none = _build(cli, kwargs, epoch, "none")(logits, targets)
    total = _build(cli, kwargs, epoch, "sum")(logits, targets)
    mean = _build(cli, kwargs, epoch, "mean")(logits, targets)
    torch.testing.assert_close(none.sum(), total, rtol=1e-12, atol=1e-14)
    counted = (
        (targets != -1).sum()
        if kwargs.get("unknown", "negative" if cli != "bce" else "ignore") == "ignore"
        else targets.numel()
    )
    torch.testing.assert_close(mean, total / counted, rtol=1e-12, atol=1e-14)


def _call(loss, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss(logits, targets)``; a loss with per-image state (ROLE, LL-Cp) gets a fresh table and the row indices."""
    if isinstance(loss, PerImageState):
        loss.init_state(torch.full(tuple(logits.shape), -1), seed=0)
        return loss(logits, targets, torch.arange(logits.shape[0]))
    return loss(logits, targets)


@pytest.mark.parametrize("cli", sorted(L.LOSSES))
def test_float32_follows_input_and_matches_float64(cli: str) -> None:
    logits, targets = loss_case(9, n=6, c=5)
    loss = L.build_loss(cli)
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(2)
    z32 = logits.float().requires_grad_()
    out32 = _call(loss, z32, targets)
    assert out32.dtype == torch.float32 and out32.device == z32.device
    out32.backward()
    assert z32.grad is not None and z32.grad.dtype == torch.float32
    z64 = logits.clone().requires_grad_()
    out64 = _call(loss, z64, targets)
    out64.backward()
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z32.grad.double(), z64.grad, rtol=1e-4, atol=1e-6)
    for target_dtype in (torch.float32, torch.int8):
        torch.testing.assert_close(_call(loss, logits, targets.to(target_dtype)), out64.detach())


@pytest.mark.parametrize("cli", sorted(L.LOSSES))
def test_validation_errors(cli: str) -> None:
    loss = L.build_loss(cli)
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="targets"):
        _call(loss, logits, torch.full((3, 4), 2))
    with pytest.raises(ValueError, match="shape"):
        _call(loss, logits, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="reduction"):
        L.build_loss(cli, reduction="avg")


def test_all_unknown_and_empty_batches_are_finite() -> None:
    targets = torch.full((3, 4), -1)
    logits = torch.randn(3, 4, requires_grad=True)
    for cli in sorted(L.LOSSES):
        out = _call(L.build_loss(cli), logits, targets)
        assert torch.isfinite(out)
    assert L.BCELoss()(logits, targets).item() == 0.0
    for cli in sorted(L.LOSSES):
        assert torch.isfinite(_call(L.build_loss(cli), torch.zeros(0, 4), torch.zeros(0, 4)))


def test_registry_and_build_loss() -> None:
    assert set(L.LOSSES) == {
        "bce",
        "bce-an",
        "wan",
        "epr",
        "role",
        "focal",
        "asl",
        "hill",
        "splc",
        "ll-r",
        "ll-ct",
        "ll-cp",
        "gr",
        "gpr",
        "boostlu-ll-r",
        "boostlu-ll-ct",
        "boostlu-ll-cp",
        "em",
        "em-apl",
    }
    assert isinstance(L.build_loss("ASL", gamma_pos=0), L.AsymmetricLoss)
    with pytest.raises(ValueError, match="valid names: asl, bce, bce-an"):
        L.build_loss("bce-wan")
    with pytest.raises(TypeError):
        L.build_loss("hill", gamma_pos=1)
    for cls in L.LOSSES.values():
        # each equation lives once, in its function's docstring; the class points there with :func:
        doc = (cls.__doc__ or "") + (cls.__mro__[1].__doc__ or "")
        funcs = [getattr(LF, ref.split(".")[-1].lstrip("~"), None) for ref in re.findall(r":func:`([^`]+)`", doc)]
        assert cls.__doc__ and any(f is not None and ".. math::" in (f.__doc__ or "") for f in funcs), cls


def test_set_epoch_validates() -> None:
    for cli in ("splc", "ll-r", "ll-ct", "ll-cp"):
        loss = L.build_loss(cli)
        with pytest.raises(ValueError, match="epoch"):
            loss.set_epoch(-1)  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="epoch"):
            loss.set_epoch(1.0)  # type: ignore[attr-defined, arg-type]


def test_bad_hyper_parameters_raise() -> None:
    logits, targets = loss_case(10)
    with pytest.raises(ValueError, match="unknown"):
        L.BCELoss(unknown="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tau"):
        LF.splc_loss(logits, targets, tau=1.5)
    with pytest.raises(ValueError, match="delta_rel"):
        L.LargeLossRejection(delta_rel=2.0)
    with pytest.raises(ValueError, match="gamma"):
        LF.focal_loss(logits, targets, gamma=-1.0)


# Construction-time validation: every LOSSES entry with bad hyper-parameters (at least one each). The module's
# __init__ and its functional form call the same per-family check, so the error names the argument and the value.
NAN, INF = float("nan"), float("inf")
BAD_HYPER_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "bce": [{"unknown": "skip"}, {"clamp_eps": 0.0}],
    "bce-an": [{"unknown": "x"}, {"clamp_eps": -1.0}],
    "wan": [{"gamma": -0.5}, {"gamma": INF}],
    "epr": [{"expected_num_pos": -1.0}, {"expected_num_pos": NAN}],
    "role": [{"expected_num_pos": -2.9}, {"lr_mult": 0.0}],
    "focal": [{"gamma": -1.0}, {"unknown": "x"}, {"clamp_eps": 0.0}],
    "asl": [{"clip": -1.0}, {"gamma_neg": -1.0}, {"gamma_pos": INF}, {"eps": 0.0}, {"unknown": "x"}],
    "hill": [{"gamma": -1.0}, {"margin": NAN}, {"lamb": INF}, {"unknown": "x"}],
    "splc": [{"tau": 3.0}, {"tau": -0.1}, {"gamma": -2.0}, {"margin": INF}, {"start_epoch": -1}],
    "ll-r": [{"delta_rel": 2.0}],
    "ll-ct": [{"delta_rel": -0.1}],
    "ll-cp": [{"delta_rel": 1.5}],
    "gr": [{"q2": 0.0}, {"q3": NAN}, {"num_epochs": 0}, {"variant": "x"}],
    "gpr": [{"lam_1": 1.5}, {"rho": -0.1}, {"reg": INF}, {"pl_threshold": 2.0}, {"q2": -1.0}],
    "boostlu-ll-r": [{"delta_rel": 2.0}, {"alpha": 0.0}, {"candidates": "x"}, {"schedule": "x"}],
    "boostlu-ll-ct": [{"delta_rel": -0.1}, {"alpha": NAN}],
    "boostlu-ll-cp": [{"delta_rel": 1.5}, {"alpha": -1.0}],
    "em": [{"alpha": -0.1}, {"eps": NAN}],
    "em-apl": [{"beta": -1.0}, {"neg_proportion": 1.5}, {"warmup_epoch": -1}, {"num_epochs": 0}],
}
BAD_CASES = [(cli, kw) for cli, kws in sorted(BAD_HYPER_PARAMETERS.items()) for kw in kws]


def test_every_loss_has_bad_hyper_parameter_cases() -> None:
    assert set(BAD_HYPER_PARAMETERS) == set(L.LOSSES)


def _assert_names_argument(err: pytest.ExceptionInfo[ValueError], kwargs: dict[str, Any]) -> None:
    ((name, value),) = kwargs.items()
    assert f"`{name}`" in str(err.value) and repr(value) in str(err.value), str(err.value)


@pytest.mark.parametrize(("cli", "kwargs"), BAD_CASES, ids=[f"{c}-{next(iter(k))}" for c, k in BAD_CASES])
def test_bad_hyper_parameters_raise_at_construction(cli: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as err:
        L.build_loss(cli, **kwargs)
    _assert_names_argument(err, kwargs)
    with pytest.raises(ValueError) as err:
        L.LOSSES[cli](**kwargs)
    _assert_names_argument(err, kwargs)


def _role(z: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
    return LF.role_loss(z, torch.zeros_like(z), y, **kw)


def _gpr(z: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
    return LF.gpr_loss(z, y, torch.zeros_like(y), **kw)


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (LF.gr_loss, {"q2": 0.0}),
        (_gpr, {"lam_2": 1.5}),
        (LF.binary_cross_entropy, {"clamp_eps": 0.0}),
        (LF.binary_cross_entropy, {"unknown": "skip"}),
        (LF.weak_assume_negative, {"gamma": -0.5}),
        (LF.expected_positive_regularization, {"expected_num_pos": -1.0}),
        (_role, {"expected_num_pos": -1.0}),
        (LF.focal_loss, {"unknown": "x"}),
        (LF.focal_loss, {"clamp_eps": 0.0}),
        (LF.asymmetric_loss, {"clip": -1.0}),
        (LF.asymmetric_loss, {"eps": 0.0}),
        (LF.hill_loss, {"margin": NAN}),
        (LF.splc_loss, {"tau": 3.0}),
        (LF.large_loss, {"scheme": "flip"}),
    ],
)
def test_functional_forms_share_the_validation(fn: Callable[..., torch.Tensor], kwargs: dict[str, Any]) -> None:
    logits, targets = loss_case(11)
    if fn is LF.large_loss:
        kwargs = {"rate": 0.1, **kwargs}
    with pytest.raises(ValueError) as err:
        fn(logits, targets, **kwargs)
    _assert_names_argument(err, {k: v for k, v in kwargs.items() if k != "rate"})


def test_option_sets_are_literal_aliases() -> None:
    assert get_args(L.Reduction) == ("mean", "sum", "none")
    assert get_args(L.Unknown) == ("ignore", "negative")
    assert get_args(L.Scheme) == ("reject", "correct")
    assert LF.Reduction is L.Reduction and LF.Unknown is L.Unknown and LF.Scheme is L.Scheme


def _bf16_cases() -> list[tuple[str, Callable[[], torch.nn.Module], str]]:
    cases: list[tuple[str, Callable[[], torch.nn.Module], str]] = [
        (cli, (lambda cli=cli: L.build_loss(cli)), "elementwise") for cli in sorted(L.LOSSES)
    ]
    cases += [
        ("clml", lambda: L.CLML(tau=0.6), "clml"),
        ("label-supcon", lambda: L.LabelSupConLoss(), "label"),
        ("image-supcon", lambda: L.ImageSupConLoss(), "image"),
    ]
    return cases


@pytest.mark.parametrize(("name", "make", "kind"), _bf16_cases(), ids=[c[0] for c in _bf16_cases()])
def test_every_loss_computes_in_float32_under_bf16_autocast(
    name: str, make: Callable[[], torch.nn.Module], kind: str
) -> None:
    """Inside autocast a loss gets half-precision inputs; it must compute and return float32 (not bfloat16)."""
    g = torch.Generator().manual_seed(4)
    n, c = 6, 5
    logits = (3 * torch.randn(n, c, generator=g)).to(torch.bfloat16)
    targets = torch.tensor([[1, 0, -1, 0, 1], [0, 1, 1, -1, 0], [1, 1, 0, 0, -1]] * 2)

    def call(dtype: torch.dtype) -> torch.Tensor:
        loss = make()
        z = logits.to(dtype)
        if kind == "clml":
            feats = torch.randn(n, 7, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16).to(dtype)
            loss.set_epoch(1)  # type: ignore[operator]
            return loss(feats, z, targets)
        if kind == "label":
            emb = torch.nn.functional.normalize(
                torch.randn(n, c, 4, generator=torch.Generator().manual_seed(2)), dim=-1
            )
            return loss(emb.to(torch.bfloat16).to(dtype), targets, z)
        if kind == "image":
            emb = torch.nn.functional.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
            return loss(emb.to(torch.bfloat16).to(dtype), targets)
        if isinstance(loss, PerImageState):
            loss.init_state(targets, seed=0)
            return loss(z, targets, torch.arange(n))
        return loss(z, targets)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = call(torch.bfloat16)
    reference = call(torch.float32)  # the same (bfloat16-representable) inputs, in float32, no autocast
    assert got.dtype == torch.float32, name
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-7)
