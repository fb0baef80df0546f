"""``mlcl train``: documented flags, loss options that would do nothing, warnings about the labels."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from mlcl.cli import TRAIN_FLAGS, _build_parser, main
from mlcl.engine.config import Config


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in _build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_every_train_flag_has_help_and_its_default() -> None:
    """Each option says what it does; each configuration flag names its key and the configuration's default."""
    parser = _train_parser()
    defaults = Config()
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        if action.dest in TRAIN_FLAGS:
            key = TRAIN_FLAGS[action.dest]
            section, name = key.split(".")
            value = getattr(getattr(defaults, section), name)
            assert f"-o {key};" in action.help, (action.dest, action.help)
            assert ("default: " + ("" if value is None else str(value))) in action.help, (action.dest, action.help)
    text = parser.format_help()
    assert "(default: None)" not in text and "default: 0.75)" in text  # --clml-tau


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--clml-tau", "5"], "--clml-tau 5.0"),
        (["--clml-weight", "0.75"], "--clml-weight 0.75"),
        (["-o", "loss.clml_tau=5"], "`loss.clml_tau`=5.0"),
        (["-o", "loss.clml_start_epoch=1"], "`loss.clml_start_epoch`=1"),  # given explicitly, even at its default
        (["-o", "loss.con_tau=0.1"], "`loss.con_tau`=0.1"),
        (["--contrastive", "image", "-o", "loss.denominator_size=4"], "`loss.denominator_size`=4"),
    ],
)
def test_a_loss_option_for_a_term_the_loss_lacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], named: str
) -> None:
    """Exit 2 and one line naming the option and why it does nothing; nothing is trained or written."""
    with pytest.raises(SystemExit) as e:
        main(["train", *argv, "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mlcl: error: {named} does nothing: "), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("yaml_text", "ok"),
    [
        ("loss:\n  name: hill\n  clml_tau: 0.5\n", False),
        ("loss:\n  name: hill+clml\n  clml_tau: 0.5\n", True),
        ("loss:\n  contrastive: none\n  contrastive_weight: 2\n", False),
        ("loss:\n  contrastive: image\n  contrastive_weight: 2\n", True),
        # train.method=mulcon: stage 2 has the label-level term, so its options are used
        ("train:\n  method: mulcon\nmodel:\n  head: mulcon\nloss:\n  con_tau: 0.1\n  denominator_size: 4\n", True),
    ],
)
def test_config_files_are_checked_for_loss_options_that_do_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, yaml_text: str, ok: bool
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    if ok:
        assert main(["config", "validate", "--no-build", str(path)]) == 0
        return
    with pytest.raises(SystemExit) as e:
        main(["config", "validate", "--no-build", str(path)])
    assert e.value.code == 2
    assert "does nothing" in capsys.readouterr().err


def _warnings(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> list[str]:
    """The warning lines of ``mlcl train ARGV`` stopped by a missing label file (before any training)."""
    with pytest.raises(SystemExit):
        main(["train", *argv, "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("mlcl: error:") and "none.csv" in err[-1], err
    return [line for line in err if line.startswith("mlcl: warning:")]


@pytest.mark.parametrize(
    ("argv", "warns"),
    [
        (["--missing", "single-positive"], True),
        (["--missing", "keep-half-plus-one", "--loss", "bce+clml"], True),
        (["--missing", "single-positive", "--loss", "focal", "-o", "loss.options.unknown=ignore"], True),
        (["--missing", "single-positive", "--loss", "bce-an"], False),
        (["--missing", "single-positive", "--loss", "bce", "-o", "loss.options.unknown=negative"], False),
        (["--missing", "drop:0.5"], False),
        (["--missing", "partial:0.3"], False),
    ],
)
def test_positive_only_labels_with_a_loss_that_ignores_unknowns_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], warns: bool
) -> None:
    """No negative left and unknown labels ignored: every label would be learned as present; the warning says so."""
    from mlcl.loss_catalog import LOSS_CATALOG

    lines = _warnings(tmp_path, capsys, argv)
    if not warns:
        assert lines == []
        return
    assert len(lines) == 1, lines
    made_for = [n for n, e in LOSS_CATALOG.items() if "single-positive" in e.made_for]
    assert all(name in lines[0] for name in ("bce-an", "wan", "epr", "role", "em-apl")) and len(made_for) > 5
    assert "mlcl list losses" in lines[0]


def test_an_unknown_loss_option_lists_the_loss_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mlcl.losses import FocalLoss

    with pytest.raises(SystemExit) as e:
        main(["train", "--loss", "focal", "-o", "loss.options.foo=1", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`loss.options.foo`" in err, err
    for option in inspect.signature(FocalLoss).parameters:
        if option != "reduction":
            assert option in err, (option, err)


def test_an_unknown_backbone_points_to_mlcl_list_backbones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--backbone", "resnet99", "--out", str(tmp_path / "r"), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mlcl list backbones '*resnet*'" in err and "timm.list_models" not in err, err
    assert not (tmp_path / "r").exists()


def test_the_probe_is_reported_as_a_readable_line(caplog: pytest.LogCaptureFixture) -> None:
    """``head initialised by a linear probe on N training images (C=c): training BCE x``, not a raw dict."""
    import logging

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from mlcl.engine.probe import init_head_from_probe
    from mlcl.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet10t", 3)
    images = torch.randn(12, 3, 32, 32)
    targets = torch.randint(0, 2, (12, 3)).float()
    loader = DataLoader(TensorDataset(images, targets, torch.arange(12)), batch_size=4)
    with caplog.at_level(logging.INFO, logger="mlcl"):
        summary = init_head_from_probe(model, loader, torch.device("cpu"), c=0.5)
    lines = [r.getMessage() for r in caplog.records if "linear probe" in r.getMessage()]
    assert lines == [
        f"head initialised by a linear probe on 12 training images (C=0.5): training BCE {summary['train_bce']:.4f} "
        "on the observed labels"
    ]
