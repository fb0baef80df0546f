"""Images per second of every training and prediction path against this machine's limit, in one interleaved run.

    python benchmarks/bench_throughput.py                       # Lite0 at 224 and 160 px, resnet50 at 224
    python benchmarks/bench_throughput.py --models tf_efficientnet_lite0:224 --reps 5 --no-compile

For each ``backbone:size`` (random weights, 5 classes, linear head, batch ``--batch-size``) it measures:

* **forward** (pre-decoded batches): ONNX Runtime's bare forward of the exported model (the inference limit), and
  PyTorch's: the plain eager float32 forward under ``no_grad`` (mlcl before this benchmark), then mlcl's
  :class:`~mlcl.inference.Predictor` (inference mode, batch norm folded, channels-last: the default), with bf16
  autocast, and with ``torch.compile``; the largest difference of the bf16 probabilities from float32's is printed;
* **training step** (pre-decoded batches; forward, BCE in float32, backward, AdamW): the plain eager float32 loop
  (NCHW, torch's default AdamW), channels-last, + bf16 autocast, + the fused AdamW (mlcl's default on a CPU with
  native bf16), and ``torch.compile`` on top (its compile time printed);
* **mlcl train**: mlcl's own step (:func:`mlcl.engine.loop.train_step` and the EMA update) fed by its training
  loader (``--workers`` processes decoding and augmenting the real MIML JPEGs), built by
  :func:`mlcl.engine.build.build_training` with the options of before (``train.amp=off``,
  ``train.channels_last=false``, ``optim.fused=false``) and with the defaults resolved on this machine;
* **mlcl predict**: the code path of ``mlcl predict`` (:func:`mlcl.inference.predict_files`: a DataLoader with
  ``--workers`` decoding the MIML JPEGs, then the model) with each backend, and PyTorch's without folding and
  channels-last (as before);
* **data pipeline**: decode + augment + collate of the training loader in one process (images/s per worker),
  :func:`data_pipeline_rate`.

Every variant runs once to warm up (compilation, oneDNN's kernel choice, the loaders' workers), then the variants
take turns, ``--reps`` times, in a rotating order; each table gives the median images/s and the median over the
repetitions of the ratio to the table's first row (measured in the same repetition, so that a change of the
machine's load between repetitions cancels out). The machine's load average (``os.getloadavg``) is printed before
and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlcl import create_model  # noqa: E402
from mlcl.engine.config import Config, load_config  # noqa: E402
from mlcl.inference import OnnxPredictor, Predictor, find_images, predict_files  # noqa: E402

NUM_CLASSES = 5


class Rates(NamedTuple):
    """Per round images/s: by the wall clock, and per CPU-second of this process (all its threads)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    warm: dict[str, float]  #: the warm-up call's seconds (compilation included)


def interleaved(units: dict[str, Callable[[], int]], reps: int) -> Rates:
    """Run every unit once (warm-up, timed), then ``reps`` rounds in rotating order."""
    warm = {}
    for name, fn in units.items():
        t0 = time.perf_counter()
        fn()
        warm[name] = time.perf_counter() - t0
    wall: dict[str, list[float]] = {name: [] for name in units}
    cpu: dict[str, list[float]] = {name: [] for name in units}
    names = list(units)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            n = units[name]()
            wall[name].append(n / (time.perf_counter() - t0))
            cpu[name].append(n / max(time.process_time() - c0, 1e-9))
    return Rates(wall, cpu, warm)


def _ratio(rates: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(r / b for r, b in zip(rates[name], rates[base], strict=True))


def table(title: str, rates: Rates, notes: dict[str, str] | None = None, *, cpu: bool = True) -> str:
    """A Markdown table: median images/s and the median per-round ratio to the first row.

    With ``cpu``, also the images per CPU-second of this process (every thread of it; the loader's worker
    processes are not counted, so the predict and ``mlcl train`` tables leave it out) and its ratio: less
    sensitive than the wall clock to other processes sharing the cores.
    """
    notes = notes or {}
    names = list(rates.wall)
    head = "| path | images/s | x first row |" + (" images/CPU-s | x first row |" if cpu else "") + " note |"
    lines = [f"\n{title}\n", head, "|---" * (head.count("|") - 1) + "|"]
    for name in names:
        row = f"| {name} | {statistics.median(rates.wall[name]):.1f} | {_ratio(rates.wall, name, names[0]):.2f} |"
        if cpu:
            row += f" {statistics.median(rates.cpu[name]):.1f} | {_ratio(rates.cpu, name, names[0]):.2f} |"
        lines.append(f"{row} {notes.get(name, '')} |")
    return "\n".join(lines)


def make_model(backbone: str, weights: str | None = None) -> Any:
    torch.manual_seed(0)
    return create_model(backbone, NUM_CLASSES, weights=weights)


def predictor_config(backbone: str, size: int) -> Config:
    cfg = Config()
    cfg.model.backbone = backbone
    cfg.data.image_size = size
    cfg.data.mean, cfg.data.std = [0.5] * 3, [0.5] * 3
    return cfg


# ---------------------------------------------------------------------------------------------------- forward


def forward_units(
    backbone: str, size: int, batch: int, batches: int, compile_: bool, weights: str | None, tmp: Path
) -> tuple[dict[str, Callable[[], int]], dict[str, str]]:
    import onnxruntime as ort

    from mlcl.export import export_model

    model = make_model(backbone, weights).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).clamp(-2.5, 2.5)
    cfg = predictor_config(backbone, size)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    path = tmp / f"{backbone}_{size}.onnx"
    export_model(model, path, fmt="onnx", image_size=size, metadata={"class_names": names})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    plain = copy.deepcopy(model)
    default = Predictor(model, cfg, names, torch.device("cpu"))
    bf16 = Predictor(model, cfg, names, torch.device("cpu"), precision="bfloat16")
    notes = {"PyTorch, Predictor (inference mode, BN folded, channels-last)": f"{default.folded} BN layers folded"}
    with torch.no_grad():
        ref = torch.sigmoid(plain(x).logits)
    diff_fold = float((default.predict_tensor(x) - ref).abs().max())
    diff_bf16 = float((bf16.predict_tensor(x) - default.predict_tensor(x)).abs().max())
    notes["PyTorch, Predictor (inference mode, BN folded, channels-last)"] += f"; max |p - p_plain| {diff_fold:.1e}"
    notes["PyTorch, Predictor + bf16 autocast"] = f"max |p_bf16 - p_fp32| {diff_bf16:.1e}"

    def repeat(fn: Callable[[], Any]) -> Callable[[], int]:
        def unit() -> int:
            for _ in range(batches):
                fn()
            return batches * batch

        return unit

    def plain_forward() -> None:
        with torch.no_grad():
            plain(x)

    units = {
        "ONNX Runtime, bare forward (the limit)": repeat(lambda: session.run(None, feed)),
        "PyTorch, plain eager float32 (no_grad, NCHW)": repeat(plain_forward),
        "PyTorch, Predictor (inference mode, BN folded, channels-last)": repeat(lambda: default.predict_tensor(x)),
        "PyTorch, Predictor + bf16 autocast": repeat(lambda: bf16.predict_tensor(x)),
    }
    if compile_:
        compiled = Predictor(model, cfg, names, torch.device("cpu"))
        compiled.model = torch.compile(compiled.model)  # type: ignore[assignment]
        units["PyTorch, Predictor + torch.compile"] = repeat(lambda: compiled.predict_tensor(x))
    return units, notes


# ----------------------------------------------------------------------------------------------- training step


def train_units(backbone: str, size: int, batch: int, steps: int, compile_: bool) -> dict[str, Callable[[], int]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).clamp(-2.5, 2.5)
    y = (torch.rand(batch, NUM_CLASSES, generator=g) < 0.3).float()

    def unit(cl: bool, bf16: bool, fused: bool, comp: bool) -> Callable[[], int]:
        model = make_model(backbone).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, **({"fused": True} if fused else {}))
        net = torch.compile(model) if comp else model
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x

        def run() -> int:
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(xi).logits
                loss = F.binary_cross_entropy_with_logits(logits.float(), y)  # the loss in float32
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return steps * batch

        return run

    units = {
        "plain eager float32 loop (NCHW, AdamW)": unit(False, False, False, False),
        "channels-last": unit(True, False, False, False),
        "channels-last + bf16 autocast": unit(True, True, False, False),
        "channels-last + bf16 + fused AdamW": unit(True, True, True, False),
    }
    if compile_:
        units["channels-last + torch.compile"] = unit(True, False, False, True)
        units["channels-last + bf16 + fused AdamW + torch.compile"] = unit(True, True, True, True)
    return units


# --------------------------------------------------------------------------------------------- mlcl train / data


def _train_config(csv: Path, backbone: str, size: int, batch: int, workers: int, extra: list[str]) -> Config:
    return load_config(
        None,
        [
            f"data.train={csv}",
            f"model.backbone={backbone}",
            f"data.image_size={size}",
            f"train.batch_size={batch}",
            f"data.num_workers={workers}",
            "train.device=cpu",
            "train.epochs=1",
            "run.progress=false",
            "run.tensorboard=false",
            *extra,
        ],
    )


def mlcl_train_units(
    csv: Path, backbone: str, size: int, batch: int, steps: int, workers: int
) -> tuple[dict[str, Callable[[], int]], dict[str, str]]:
    from mlcl.engine.build import build_training
    from mlcl.engine.loop import train_step

    before = ["train.amp=off", "train.channels_last=false", "optim.fused=false"]
    variants = {"mlcl train, the options of before (float32, NCHW, AdamW)": before, "mlcl train, defaults": []}
    units, notes = {}, {}
    for name, extra in variants.items():
        t = build_training(_train_config(csv, backbone, size, batch, workers, extra), torch.device("cpu"), fresh=True)
        t.model.train()
        c = t.cfg
        notes[name] = f"amp={c.train.amp}, channels_last={c.train.channels_last}, fused={c.optim.fused}"
        state = {"it": iter(t.train_loader), "step": 0}

        def run(t: Any = t, state: dict[str, Any] = state) -> int:
            for _ in range(steps):
                b = next(state["it"], None)
                if b is None:
                    state["it"] = iter(t.train_loader)
                    b = next(state["it"])
                images, targets, index = b
                train_step(t, images, targets, index)
                state["step"] += 1
                if t.ema is not None:
                    t.ema.update(t.model, step=state["step"])
            return steps * t.per_rank_batch

        units[name] = run
    return units, notes


def data_pipeline_rate(csv: Path, backbone: str, size: int, batch: int, batches: int) -> Callable[[], int]:
    """The data pipeline alone, in one process (images/s per worker): decode + augment + collate.

    The training loader that ``mlcl train`` builds (:func:`mlcl.engine.build.build_training`), with no worker
    processes, so that the batches are made in this process; nothing else runs.
    """
    from mlcl.engine.build import build_training

    t = build_training(_train_config(csv, backbone, size, batch, 0, []), torch.device("cpu"), fresh=True)
    state = {"it": iter(t.train_loader)}

    def run() -> int:
        n = 0
        for _ in range(batches):
            b = next(state["it"], None)
            if b is None:
                state["it"] = iter(t.train_loader)
                b = next(state["it"])
            n += int(b[0].shape[0])
        return n

    return run


# ----------------------------------------------------------------------------------------------------- predict


def predict_units(
    backbone: str, size: int, batch: int, workers: int, files: list[Path], tmp: Path
) -> dict[str, Callable[[], int]]:
    from mlcl.engine.checkpoint import save_checkpoint
    from mlcl.engine.config import config_to_dict
    from mlcl.export import export_checkpoint

    model = make_model(backbone).eval()
    cfg = predictor_config(backbone, size)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    ckpt = tmp / f"{backbone}_{size}.pt"
    state = {"version": "bench", "config": config_to_dict(cfg), "class_names": names, "model_class": "x"}
    save_checkpoint(ckpt, {**state, "model": model.state_dict(), "eval_weights": "model"})
    onnx_path = tmp / f"{backbone}_{size}_predict.onnx"
    export_checkpoint(ckpt, onnx_path, fmt="onnx")
    predictors = {
        "mlcl predict --backend onnx": OnnxPredictor(onnx_path),
        "mlcl predict (torch: Predictor defaults)": Predictor.from_checkpoint(ckpt),
        "mlcl predict (torch, as before: no folding, NCHW)": Predictor(
            model, cfg, names, torch.device("cpu"), fold_bn=False, channels_last=False
        ),
    }

    def unit(p: Any) -> Callable[[], int]:
        def run() -> int:
            n = 0
            for idx, _probs, errs in predict_files(p, files, batch_size=batch, workers=workers):
                n += len(idx) + len(errs)
            return n

        return run

    return {name: unit(p) for name, p in predictors.items()}


# -------------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tf_efficientnet_lite0:224,tf_efficientnet_lite0:160,resnet50:224")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="training steps per unit")
    p.add_argument("--batches", type=int, default=3, help="forward batches per unit")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--predict-images", type=int, default=256)
    p.add_argument("--miml", type=Path, default=Path("../shared/data/miml"))
    p.add_argument("--weights", default="../shared/weights/tf_efficientnet_lite0.pth", help="Lite0's, for bf16's diff")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows (minutes of compiling)")
    p.add_argument(
        "--only", default="forward,train,mlcl-train,predict,data", help="comma-separated parts to run (default: all)"
    )
    a = p.parse_args()
    parts = set(a.only.split(","))
    from miml_split import make_split
    from mlcl.engine.speed import cpu_flags, native_bf16

    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx") or f == "avx512f")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, capability "
        f"{torch.backends.cpu.get_cpu_capability()}, flags {flags}, native bf16 {native_bf16(torch.device('cpu'))}"
    )
    print(f"load average before: {os.getloadavg()}; batch {a.batch_size}, {a.reps} rounds, workers {a.workers}")
    files = find_images([a.miml / "images"])[: a.predict_images]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        csv, _ = make_split(a.miml, tmp / "split", seed=0)
        for spec in a.models.split(","):
            backbone, size_text = spec.split(":")
            size = int(size_text)
            head = f"{backbone} at {size} px, batch {a.batch_size}"
            weights = a.weights if backbone == "tf_efficientnet_lite0" and Path(a.weights).is_file() else None
            if "forward" in parts:
                units, notes = forward_units(backbone, size, a.batch_size, a.batches, not a.no_compile, weights, tmp)
                rates = interleaved(units, a.reps)
                warm = rates.warm
                if "PyTorch, Predictor + torch.compile" in warm:
                    notes["PyTorch, Predictor + torch.compile"] = (
                        f"first call {warm['PyTorch, Predictor + torch.compile']:.0f} s"
                    )
                print(
                    table(
                        f"**Forward, {head}** (pre-decoded; bf16 diff on {'ImageNet' if weights else 'random'} "
                        "weights)",
                        rates,
                        notes,
                    ),
                    flush=True,
                )
            if "train" in parts:
                units_t = train_units(backbone, size, a.batch_size, a.steps, not a.no_compile)
                rates = interleaved(units_t, a.reps)
                notes = {k: f"first step {v:.0f} s (compilation)" for k, v in rates.warm.items() if "compile" in k}
                print(
                    table(f"**Training step, {head}** (pre-decoded; forward, BCE, backward, AdamW)", rates, notes),
                    flush=True,
                )
            if "mlcl-train" in parts:
                units_m, notes = mlcl_train_units(csv, backbone, size, a.batch_size, a.steps, a.workers)
                rates = interleaved(units_m, a.reps)
                print(
                    table(f"**mlcl train, {head}** (real MIML JPEGs, {a.workers} workers)", rates, notes, cpu=False),
                    flush=True,
                )
            if "predict" in parts:
                units_p = predict_units(backbone, size, a.batch_size, a.workers, files, tmp)
                rates = interleaved(units_p, a.reps)
                print(
                    table(f"**mlcl predict, {head}** ({len(files)} MIML JPEGs, {a.workers} workers)", rates, cpu=False),
                    flush=True,
                )
            if "data" in parts:
                unit = data_pipeline_rate(csv, backbone, size, a.batch_size, 4)
                rates = interleaved({"data pipeline, one process (decode + augment + collate)": unit}, a.reps)
                print(table(f"**Data pipeline, {head}** (images/s per worker)", rates), flush=True)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
