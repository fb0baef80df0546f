"""Inference from a checkpoint alone: ``Predictor.from_checkpoint(path).predict(images)``."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate

from mlcl.calibration import Thresholds, sidecar_path
from mlcl.data.dataset import load_prepared
from mlcl.data.transforms import build_transform
from mlcl.engine.build import model_from_config
from mlcl.engine.checkpoint import inference_state_dict, load_checkpoint
from mlcl.engine.config import Config, config_from_dict
from mlcl.errors import CheckpointError, ConfigError, DataError
from mlcl.models.batchnorm_folding import fold_batchnorm
from mlcl.models.classifier import MultiLabelClassifier
from mlcl.models.label_attention import attention_maps

__all__ = ["IMAGE_EXTENSIONS", "OnnxPredictor", "Predictor", "find_images", "predict_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files; a missing path is a DataError."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"image or folder not found: {p}")
    if not out:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    return out


class Predictor:
    """A trained model with its preprocessing and class names, ready for inference.

    The model is prepared for inference once (:func:`mlcl.models.batchnorm_folding.fold_batchnorm`; BENCHMARKS.md,
    "Training and prediction speed"): a copy in evaluation mode with its batch-norm layers folded into the
    convolutions (the same function to float32 rounding) and its weights in channels-last memory format, run
    under ``torch.inference_mode``. ``precision="bfloat16"`` adds bf16 autocast: faster on a CPU with native
    bf16, but its probabilities differ from float32's by more than 1e-3 (so it is not the default).

    Args:
        model: The classifier (not modified: the predictor keeps a prepared copy as :attr:`model`).
        config: The run's resolved configuration (image size and normalisation are read from it).
        class_names: ``C`` class names.
        device: Where to run.
        thresholds: Per-class thresholds (``thresholds.json`` beside the checkpoint), used by :meth:`decide`
            when no threshold is given; ``None``: the configuration's global ``run.threshold``.
        fold_bn: Fold batch normalisation into the convolutions.
        channels_last: Channels-last memory format; ``None``: on for CPU and CUDA.
        precision: ``float32`` or ``bfloat16`` (autocast of the forward; probabilities stay float32).
    """

    def __init__(
        self,
        model: MultiLabelClassifier,
        config: Config,
        class_names: list[str],
        device: torch.device,
        thresholds: Thresholds | None = None,
        *,
        fold_bn: bool = True,
        channels_last: bool | None = None,
        precision: Literal["float32", "bfloat16"] = "float32",
    ) -> None:
        if precision not in ("float32", "bfloat16"):
            raise ConfigError(f"precision must be float32 or bfloat16, got {precision!r}")
        d = config.data
        size = int(d.image_size or 224)
        self.channels_last = device.type in ("cpu", "cuda") if channels_last is None else bool(channels_last)
        self.precision = precision
        self.model = copy.deepcopy(model).eval().to(device)
        self.folded = fold_batchnorm(self.model, torch.zeros(1, 3, size, size, device=device)) if fold_bn else 0
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.config = config
        self.class_names = list(class_names)
        self.device = device
        self.thresholds = thresholds
        self.checkpoint_path: Path | None = None
        d = config.data
        self.image_size = int(d.image_size or 224)
        self.transform = build_transform(self.image_size, train=False, mean=d.mean or [0.5] * 3, std=d.std or [0.5] * 3)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Rebuild the model of a checkpoint (no other file is needed: backbone weights come from it).

        Args:
            path: A ``best.pt``/``last.pt`` file, or a run folder (its ``best.pt``; for a MulCon run the last
                stage's).
            device: Device to run on.
        """
        p = Path(path)
        if p.is_dir() and not (p / "best.pt").is_file() and (p / "stage2" / "best.pt").is_file():
            p = p / "stage2"
        state = load_checkpoint(p)
        cfg = config_from_dict(state["config"], source=str(state["path"]))
        model = model_from_config(cfg, len(state["class_names"]), from_checkpoint=True)
        model.load_state_dict(inference_state_dict(state))
        names = list(state["class_names"])
        thresholds = None
        side = sidecar_path(state["path"])
        if side.is_file():
            thresholds = Thresholds.load(side)
            if thresholds.class_names != names:
                raise CheckpointError(f"{side}: its classes differ from those of checkpoint {state['path']}")
        pred = cls(model, cfg, names, torch.device(device), thresholds)
        pred.checkpoint_path = Path(state["path"])
        return pred

    @property
    def threshold_source(self) -> str:
        """``per-class`` when calibrated thresholds are used by default, else ``global``."""
        return "per-class" if self.thresholds is not None else "global"

    def threshold_vector(self, threshold: float | None = None) -> Tensor:
        """The ``(C,)`` thresholds :meth:`decide` applies: ``threshold`` if given, else per-class, else global."""
        if threshold is not None:
            return torch.full((len(self.class_names),), float(threshold))
        if self.thresholds is not None:
            return self.thresholds.tensor()
        return torch.full((len(self.class_names),), float(self.config.run.threshold))

    def _batch(self, images: Sequence[Any]) -> Tensor:
        """A normalised float32 batch ``(B, 3, S, S)`` on the device, of paths, PIL images or uint8 arrays.

        They are read as in training (:func:`~mlcl.data.dataset.load_prepared`: EXIF orientation, RGB rules).
        """
        tf = self.transform
        read = [load_prepared(x if isinstance(x, (Image.Image, np.ndarray)) else str(x), tf) for x in images]
        return tf.normalize(torch.stack([tf.to_uint8(img) for img in read])).to(self.device)

    @torch.no_grad()
    def predict(self, images: Sequence[Any] | Tensor, *, batch_size: int = 32) -> Tensor:
        """Probabilities ``(N, C)`` for image paths, PIL images, uint8 arrays or a preprocessed tensor."""
        if isinstance(images, Tensor):
            return self.predict_tensor(images)
        out = [self.predict_tensor(self._batch(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.class_names))

    def decide(self, probs: Tensor, *, threshold: float | None = None, top_k: int | None = None) -> list[list[str]]:
        """Predicted label names per image: ``prob >= threshold``, or the ``top_k`` highest.

        Without ``threshold``, the calibrated per-class thresholds when the checkpoint has them, else the
        configuration's ``run.threshold``.
        """
        if top_k is not None:
            if top_k < 1:
                raise ConfigError(f"--top-k must be >= 1, got {top_k}")
            idx = probs.topk(min(top_k, probs.shape[1]), dim=1).indices
            return [[self.class_names[j] for j in row.tolist()] for row in idx]
        thr = self.threshold_vector(threshold)
        return [[self.class_names[j] for j in (row >= thr).nonzero().flatten().tolist()] for row in probs]

    @torch.no_grad()
    def scores_on(self, labelset: Any, *, batch_size: int = 64, workers: int = 0) -> tuple[Tensor, Tensor]:
        """``(probs (N, C), targets (N, C))`` of a labelled :class:`~mlcl.data.labelset.MultiLabelSet`."""
        from torch.utils.data import DataLoader

        from mlcl.data.dataset import ImageDataset

        ds = ImageDataset(labelset, self.transform, normalize_on_batch=True)
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collate)
        probs, targets = [], []
        for images, t, _ in loader:
            probs.append(self.predict_tensor(images))
            targets.append(t)
        return torch.cat(probs), torch.cat(targets)

    @torch.no_grad()
    def attention_maps(self, image: Any) -> tuple[Tensor, Tensor]:
        """Label attention maps of one image (mulcon head): ``(probs (C,), maps (C, S, S))`` in [0, 1].

        The cross-attention of each label over the feature tokens, averaged over heads, reshaped to the
        feature grid and upsampled (bilinear) to the input size ``S``.
        """
        if self.model.head_type != "mulcon":
            raise ConfigError("--explain needs a checkpoint trained with the label-attention head (model.head=mulcon)")
        x = self._batch([image])
        out = self.model(x)
        hw = self.model.backbone.feature_grid(self.image_size)
        if hw is None:
            raise ConfigError(f"cannot map the tokens of backbone {self.model.backbone.name} to an image grid")
        maps = attention_maps(out.attn[:1].float(), hw)[0].unsqueeze(1)  # (C, 1, H, W)
        maps = F.interpolate(maps, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        maps = maps[:, 0]
        lo = maps.flatten(1).min(1).values[:, None, None]
        hi = maps.flatten(1).max(1).values[:, None, None]
        return torch.sigmoid(out.logits[0].float()).cpu(), ((maps - lo) / (hi - lo).clamp_min(1e-12)).cpu()

    def predict_tensor(self, x: Tensor) -> Tensor:
        """Probabilities ``(B, C)`` float32 (CPU) of a preprocessed batch ``(B, 3, S, S)``."""
        x = x.to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.precision == "bfloat16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            probs = torch.sigmoid(self.model(x).logits.float()).cpu()
        return probs.clone()  # an ordinary tensor (inference-mode tensors refuse in-place changes outside it)


class OnnxPredictor:
    """An exported ONNX model (``mlcl export --format onnx``) run with onnxruntime.

    The preprocessing, classes and thresholds come from its metadata; the interface is :class:`Predictor`'s for
    ``mlcl predict``.

    Args:
        path: The ``.onnx`` file (its metadata: ``FILE.json`` or the model's ``metadata_props``).
        providers: onnxruntime execution providers (default: CPU).
        threads: Intra-op threads (``None``: onnxruntime's default).
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None) -> None:
        from mlcl.export_metadata import read_metadata

        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"model not found: {p}")
        meta = read_metadata(p)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("--backend onnx needs onnxruntime (pip install 'mlcl[export]')") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise CheckpointError(f"{p}: onnxruntime cannot load it: {' '.join(str(e).split())[:200]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.class_names = list(meta["class_names"])
        self.image_size = int(meta["image_size"])
        self._thresholds = torch.tensor(meta["thresholds"], dtype=torch.float32)
        self.threshold_source = str(meta.get("threshold_source", "global"))
        self.transform = build_transform(self.image_size, train=False, mean=meta["mean"], std=meta["std"])
        self.metadata = meta

    def threshold_vector(self, threshold: float | None = None) -> Tensor:
        """The ``(C,)`` thresholds: ``threshold`` if given, else the exported ones."""
        if threshold is not None:
            return torch.full((len(self.class_names),), float(threshold))
        return self._thresholds.clone()

    def predict_tensor(self, x: Tensor) -> Tensor:
        """Probabilities ``(B, C)`` of a preprocessed batch."""
        return torch.from_numpy(self.session.run(None, {self.input_name: x.float().numpy()})[0])

    def decide(self, probs: Tensor, *, threshold: float | None = None, top_k: int | None = None) -> list[list[str]]:
        """As :meth:`Predictor.decide`."""
        return Predictor.decide(self, probs, threshold=threshold, top_k=top_k)  # type: ignore[arg-type]


class _ImageFiles(torch.utils.data.Dataset):
    """Decoded, preprocessed image files; an unreadable file gives an error message instead of failing the run."""

    def __init__(self, files: Sequence[Path], transform: Any, image_size: int) -> None:
        self.files = list(files)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int, str]:
        """``(uint8 image (3, S, S), i, "")``, or ``(zeros, i, error message)`` for an unreadable file."""
        try:
            return self.transform.to_uint8(load_prepared(str(self.files[i]), self.transform)), i, ""
        except Exception as e:  # noqa: BLE001 - reported per file by the caller, the run goes on
            msg = str(e) if isinstance(e, DataError) else f"cannot read image {self.files[i]}: {type(e).__name__}: {e}"
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), i, " ".join(msg.split())

    def collate(self, batch: list[tuple[Tensor, int, str]]) -> tuple[Tensor, Tensor, list[str]]:
        """The loader's ``collate_fn``: the batch normalised (:meth:`ImageTransform.normalize`) in the workers."""
        x, idx, errs = default_collate(batch)
        return self.transform.normalize(x), idx, errs


def predict_files(
    predictor: Any, files: Sequence[Path], *, batch_size: int = 32, workers: int = 0
) -> Iterator[tuple[list[int], Tensor, list[tuple[int, str]]]]:
    """Batches of ``(indices of the images read, their probabilities (B, C), [(index, error)] of those not read)``.

    Decoding runs in ``workers`` DataLoader processes; an unreadable image is reported, not fatal.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    from torch.utils.data import DataLoader

    ds = _ImageFiles(files, predictor.transform, predictor.image_size)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=False, collate_fn=ds.collate)
    for x, idx, errs in loader:
        ok = [k for k, e in enumerate(errs) if not e]
        failed = [(int(idx[k]), errs[k]) for k, e in enumerate(errs) if e]
        probs = predictor.predict_tensor(x[ok]) if ok else torch.zeros(0, len(predictor.class_names))
        yield [int(idx[k]) for k in ok], probs, failed
