"""The commands end to end (train, eval, predict, data, config, list) and one-line errors for bad input."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mlcl.cli import EVAL_FLAGS, TRAIN_FLAGS, _build_parser, main
from mlcl.engine.config import field_choices
from mlcl.engine.validate import validate_config_file
from mlcl.errors import ConfigError
from mlcl.metrics import AP_VARIANTS
from tests.helpers.synthetic import CLASSES, make_shapes_csv

COMMON = [
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--backbone",
    "resnet10t",
    "-o",
    "run.tensorboard=false",
]


@pytest.fixture
def trained(tiny_run: tuple[Path, Path]) -> tuple[Path, Path]:
    """The session's tiny run (tests/cli/conftest.py): the shapes CSV and a one-epoch run of it."""
    return tiny_run


def test_train_prints_table_and_run_folder(trained: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    csv_path, run = trained
    assert (run / "metrics.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_class_AP", "n_images"):
        assert key in metrics
    assert set(metrics["per_class_AP"]) == set(CLASSES)


def test_eval_writes_json(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path, run = trained
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                str(run / "best.pt"),
                "--data",
                str(csv_path),
                "--out",
                str(out),
                "--workers",
                "0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mAP" in text and "per-class AP" in text
    m = json.loads(out.read_text())
    assert m["n_images"] == 40 and 0 <= m["mAP"] <= 1


def _unpredicted(scores_path: Path, threshold: float) -> list[str]:
    """The classes with an observed positive and no observed score >= threshold, from a saved scores file."""
    import numpy as np

    with np.load(scores_path, allow_pickle=False) as z:
        s, t, names = z["scores"], z["targets"], [str(n) for n in z["class_names"]]
    return [
        n for c, n in enumerate(names) if (t[:, c] == 1).any() and not ((t[:, c] != -1) & (s[:, c] >= threshold)).any()
    ]


def test_train_and_eval_name_the_classes_never_predicted(
    trained: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv_path, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["unpredicted_classes"] == _unpredicted(run / "test_scores.npz", 0.5)
    out, scores = tmp_path / "m.json", tmp_path / "s.npz"
    args = ["eval", str(run / "best.pt"), "--data", str(csv_path), "--out", str(out), "--scores", str(scores)]
    assert main([*args, "--threshold", "0.999", "--workers", "0", "--device", "cpu"]) == 0
    expected = _unpredicted(scores, 0.999)
    assert expected  # a one-epoch model gives no probability of 0.999
    assert json.loads(out.read_text())["unpredicted_classes"] == expected
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    line = f"{len(expected)} of {len(CLASSES)} classes get no positive prediction at threshold 0.999 on {csv_path}"
    assert any(w.startswith(line) for w in warned), warned


def test_eval_scores_file(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """``mlcl eval --scores``: the documented arrays, equal to a per-image forward pass, readable by ``mlcl report``."""
    import shutil

    import numpy as np
    from PIL import Image

    from mlcl.data.csv_format import read_csv_labels
    from mlcl.inference import Predictor

    csv_path, run = trained
    # a run folder as an older mlcl left it: no test_scores.npz; `mlcl eval --scores` writes it
    old = tmp_path / "old_run"
    old.mkdir()
    for name in ("metrics.json", "log.jsonl", "config.yaml", "best.pt"):
        shutil.copy(run / name, old / name)
    scores_path = old / "test_scores.npz"
    args = ["eval", str(old / "best.pt"), "--data", str(csv_path), "--out", str(tmp_path / "m.json")]
    assert main([*args, "--workers", "0", "--device", "cpu", "--batch-size", "7", "--scores", str(scores_path)]) == 0
    with np.load(scores_path, allow_pickle=False) as z:
        assert set(z.files) == {"scores", "targets", "ids", "files", "class_names", "device"}
        arrays = {k: z[k] for k in z.files}
    data = read_csv_labels(csv_path)
    assert arrays["scores"].dtype == np.float32 and arrays["targets"].dtype == np.int8
    assert arrays["scores"].shape == arrays["targets"].shape == (40, len(CLASSES))
    assert list(arrays["class_names"]) == data.class_names and str(arrays["device"]) == "cpu"
    assert list(arrays["ids"]) == [str(i) for i in data.ids] and list(arrays["files"]) == [str(p) for p in data.items]
    assert (arrays["targets"] == data.targets.numpy()).all()
    # independent forward pass: each image file on its own through the checkpoint's model
    pred = Predictor.from_checkpoint(old / "best.pt", device="cpu")
    with torch.no_grad():
        for i, path in enumerate(arrays["files"]):
            x = pred.transform(Image.open(str(path)).convert("RGB")).unsqueeze(0)
            expected = torch.sigmoid(pred.model.eval()(x).logits.double())[0].numpy()
            assert np.allclose(arrays["scores"][i], expected, atol=1e-5), i
    metrics = json.loads((tmp_path / "m.json").read_text())
    from sklearn.metrics import average_precision_score

    ap = [average_precision_score(arrays["targets"][:, j] == 1, arrays["scores"][:, j]) for j in range(len(CLASSES))]
    assert np.allclose(ap, list(metrics["per_class_AP"].values()), atol=1e-6)
    # mlcl report reads it (the run's metrics.json was computed on the same data: the shapes CSV)
    assert main(["report", str(old)]) == 0
    assert "class-row" in (old / "report.html").read_text()


def test_predict_csv_and_top_k(trained: tuple[Path, Path], tmp_path: Path) -> None:
    csv_path, run = trained
    out = tmp_path / "preds.csv"
    images = csv_path.parent / "images"
    assert (
        main(["predict", str(run / "best.pt"), str(images), "--top-k", "2", "--out", str(out), "--device", "cpu"]) == 0
    )
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["filename", "labels", *CLASSES]
    assert len(rows) == 41 and all(len(r[1].split("|")) == 2 for r in rows[1:])
    probs = [float(v) for v in rows[1][2:]]
    assert all(0 <= p <= 1 for p in probs)


def test_simulate_missing(trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path, _ = trained
    out = tmp_path / "sp.csv"
    assert (
        main(
            [
                "data",
                "simulate-missing",
                str(csv_path),
                "--protocol",
                "single-positive",
                "--seed",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = list(csv.reader(out.open()))[1:]
    assert len(rows) == 40
    assert all([v for v in r[1:]].count("1") == 1 and set(r[1:]) <= {"1", "-1"} for r in rows)
    original = {r[0]: r[1:] for r in list(csv.reader(csv_path.open()))[1:]}
    for r in rows:  # the kept positive was a positive
        assert original[r[0]][r[1:].index("1")] == "1"


def test_config_show_and_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", "-o", "train.epochs=7"]) == 0
    assert "epochs: 7" in capsys.readouterr().out
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    for name in ("bce", "bce-an", "hill", "splc", "asl"):
        assert name in out
    assert main(["list", "protocols"]) == 0
    assert "single-positive" in capsys.readouterr().out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("filename,a,b\nimg_000.png,1,0\nimg_001.png,1\n", ["line 3", "columns"]),
        ("filename,a,b\nimg_000.png,1,2\n", ["line 2", "'2'"]),
        ("filename,a,b\nmissing.png,1,0\n", ["missing.png"]),
        ("name,a,b\nimg_000.png,1,0\n", ["filename"]),
    ],
)
def test_bad_csv_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, content: str, fragments: list[str]) -> None:
    make_shapes_csv(tmp_path, n=4)
    bad = _write(tmp_path / "bad.csv", content)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(bad), "--out", str(tmp_path / "run"), *COMMON])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlcl: error:") and "\n" not in err
    assert "bad.csv" in err
    for f in fragments:
        assert f in err, (f, err)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unreadable_image_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = make_shapes_csv(tmp_path, n=8)
    (tmp_path / "images" / "img_003.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(csv_path), "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err
    assert "img_003.png" in err and err.count("\n") == 1


def test_class_count_mismatch_between_train_and_val(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = make_shapes_csv(tmp_path / "a", n=16)
    val = tmp_path / "a" / "val.csv"
    val.write_text("filename,red,green\nimg_000.png,1,0\n")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(train), "--val-data", str(val), "--out", str(tmp_path / "run"), *COMMON])
    err = capsys.readouterr().err
    assert "val.csv" in err and "classes" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "-o", "optim.nope=1"], "optim.nope"),
        (["train", "--missing", "drop:1.5"], "drop:1.5"),
        (["train", "--data", "nosuchkind:/x"], "nosuchkind"),
        (["train", "--weights", "/no/such/weights.pth"], "/no/such/weights.pth"),
        (["eval", "/no/such/ckpt.pt", "--data", "builtin"], "/no/such/ckpt.pt"),
        (["train", "--loss", "nonsense"], "nonsense"),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, *(["--out", str(tmp_path / "run"), "--device", "cpu"] if argv[0] == "train" else [])])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err


def test_module_entry_point() -> None:
    r = subprocess.run([sys.executable, "-m", "mlcl", "--version"], capture_output=True, text=True, check=True)
    import mlcl

    assert r.stdout.strip() == mlcl.__version__


# ------------------------------------------------------------------------------------------------ choices


def _flag_actions() -> list[tuple[str, argparse.Action]]:
    """(sub-command, action) for every option of every sub-command."""
    out = []
    parser = _build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                out.extend((command, a) for a in sub._actions)
    return out


def test_every_flag_with_choices_takes_the_config_fields_values() -> None:
    """A flag with choices accepts exactly the values of the config field it sets (its Literal's arguments)."""
    flag_keys = {"train": TRAIN_FLAGS, "eval": EVAL_FLAGS}
    checked = []
    for command, action in _flag_actions():
        key = flag_keys.get(command, {}).get(action.dest)
        if action.choices is None or not action.option_strings:
            # a flag setting a field with a fixed set of values must offer them (positionals are not fields)
            assert key is None or not _has_choices(key), f"`mlcl {command} --{action.dest}` lacks choices"
            continue
        assert key is not None, f"`mlcl {command} {action.option_strings[0]}` has choices but no config key"
        assert tuple(action.choices) == field_choices(key), (command, action.dest)
        checked.append(key)
    assert "run.ap_variant" in checked and "data.augment" in checked and len(checked) == 8


def _has_choices(key: str) -> bool:
    try:
        field_choices(key)
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("variant", AP_VARIANTS)
def test_eval_accepts_every_ap_variant(variant: str) -> None:
    args = _build_parser().parse_args(["eval", "ckpt.pt", "--data", "builtin", "--ap-variant", variant])
    assert args.ap_variant == variant


# ------------------------------------------------------------------------------------------------ config validate


@pytest.mark.parametrize(
    ("yaml_text", "fragments"),
    [
        pytest.param(
            "loss:\n  name: focal\n  options:\n    gamma: -1\n",
            ["`loss.options.gamma`", "-1"],
            id="focal-gamma",
        ),
        pytest.param(
            "loss:\n  name: hill+clml\n  clml_tau: 1.5\n",
            ["`loss.clml_tau`", "1.5"],
            id="clml-tau",
        ),
        pytest.param("optim:\n  schedule: onecycle\n  pct_start: 1.5\n", ["`optim.pct_start`", "1.5"], id="pct"),
        pytest.param("optim:\n  schedule: cosine\n  warmup_epochs: -1\n", ["`optim.warmup_epochs`", "-1"], id="warm"),
        pytest.param("optim:\n  schedule: step\n  gamma: 0\n", ["`optim.gamma`", "0"], id="gamma"),
        pytest.param("optim:\n  schedule: cosine\n  min_lr_ratio: 2\n", ["`optim.min_lr_ratio`", "2"], id="min"),
        pytest.param("optim:\n  name: sgd\n  momentum: 1.5\n", ["`optim.momentum`", "1.5"], id="momentum"),
        pytest.param("optim:\n  betas: [0.9]\n", ["`optim.betas`", "[0.9]"], id="betas"),
        pytest.param(
            "model:\n  head: mulcon\n  head_dim: 1000\n  head_heads: 3\n", ["`model.head_dim`", "1000"], id="head-dim"
        ),
        pytest.param("model:\n  head: mulcon\n  head_heads: 0\n", ["`model.head_heads`", "0"], id="heads"),
        pytest.param("model:\n  head: mulcon\n  proj_hidden: 0\n", ["`model.proj_hidden`", "0"], id="proj"),
        pytest.param("model:\n  drop_rate: 1.5\n", ["`model.drop_rate`", "1.5"], id="drop"),
        pytest.param("loss:\n  name: focal\n  options:\n    gama: 2\n", ["`loss.options.gama`", "gama"], id="kwarg"),
        pytest.param("loss:\n  name: nosuchloss\n", ["`loss.name`", "nosuchloss"], id="name"),
        pytest.param("loss:\n  contrastive: image\n  con_tau: 0\n", ["`loss.con_tau`", "0"], id="con-tau"),
        pytest.param("train:\n  batch_size: 0\n", ["`train.batch_size`", "0"], id="batch"),
        pytest.param("run:\n  threshold: 1.5\n", ["`run.threshold`", "1.5"], id="threshold"),
        pytest.param(
            "train:\n  method: mulcon\nmulcon:\n  stage2_step_size: 0\n", ["`mulcon.stage2_step_size`", "0"], id="mc"
        ),
    ],
)
def test_config_validate_rejects_what_fails_at_step_one(
    tmp_path: Path, capsys: pytest.CaptureFixture, yaml_text: str, fragments: list[str]
) -> None:
    bad = _write(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(SystemExit) as e:
        main(["config", "validate", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlcl: error:") and "\n" not in err and "bad.yaml" in err, err
    for f in fragments:
        assert f in err, (f, err)


def test_config_validate_names_the_key_of_a_loss_argument(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A loss that rejects an argument when built is reported with the config key (losses stubbed here)."""
    import mlcl.losses

    class Strict(torch.nn.Module):  # what the losses' constructors raise for a bad argument
        def __init__(self, gamma: float = 2.0, tau: float = 0.75, **kwargs: object) -> None:
            super().__init__()
            if gamma < 0:
                raise ValueError(f"`gamma` must be a finite number >= 0, got {gamma!r}")
            if not 0 <= tau <= 1:
                raise ValueError(f"`tau` must lie in [0, 1], got {tau!r}")

    monkeypatch.setitem(mlcl.losses.LOSSES, "focal", Strict)
    monkeypatch.setattr(mlcl.losses, "CLML", Strict)
    focal = _write(tmp_path / "focal.yaml", "loss:\n  name: focal\n  options:\n    gamma: -1\n")
    with pytest.raises(ConfigError, match=r"focal.yaml: `loss.options.gamma`=-1 \(loss 'focal'\): `gamma` must"):
        validate_config_file(focal, build=False)
    clml = _write(tmp_path / "clml.yaml", "loss:\n  name: focal+clml\n  clml_tau: 1.5\n")
    with pytest.raises(ConfigError, match=r"clml.yaml: `loss.clml_tau`=1.5 \(CLML\): `tau` must"):
        validate_config_file(clml, build=False)


def test_config_validate_reports_every_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad1 = _write(tmp_path / "bad1.yaml", "train:\n  batch_size: 0\n")
    good = _write(tmp_path / "good.yaml", "train:\n  epochs: 2\n")
    bad2 = _write(tmp_path / "bad2.yaml", "optim:\n  schedule: onecycle\n  pct_start: 0\n")
    with pytest.raises(SystemExit) as e:
        main(["config", "validate", "--no-build", str(bad1), str(good), str(bad2)])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out.strip() == f"{good}: ok (standard, backbone resnet10t, head linear, loss bce, data builtin)"
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "bad1.yaml" in lines[0] and "bad2.yaml" in lines[1], lines


def test_config_validate_accepts_the_kit(capsys: pytest.CaptureFixture) -> None:
    files = sorted(str(p) for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    assert main(["config", "validate", "--no-build", *files]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(files)
