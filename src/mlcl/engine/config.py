"""Typed configuration: dataclasses, YAML loading and dotted overrides.

This module is the only place that turns configuration into values; components take explicit arguments.
A configuration is a :class:`Config` made of sections (``data``, ``model``, ``loss``, ``optim``, ``train``,
``mulcon``, ``run``). It loads from YAML (``--config FILE``), and any field is set with ``-o section.key=value``
(the value is parsed as YAML, then checked against the field's type and range). Unknown sections or keys are
errors.

Every option set is a ``Literal`` alias, defined in :mod:`mlcl.choices` for the components' options (:data:`~mlcl.
choices.Head`, :data:`~mlcl.choices.Schedule`, :data:`~mlcl.choices.OptimizerName`, :data:`~mlcl.choices.
AugmentPreset`, :data:`~mlcl.choices.APVariant`; the components import them from there), or here for the
configuration's own concepts (:data:`AmpMode`, :data:`Method`, :data:`HeadInit`, :data:`ContrastiveMode`,
:data:`LossReduction`). The fields are typed with them, values are checked against them, and the CLI takes its
``choices=`` from them (:func:`field_choices`). This module imports neither torch nor any component, so that the
command line's parser can use it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from mlcl.choices import APVariant, AugmentPreset, CacheStorage, FreezeMode, Head, OptimizerName, Schedule
from mlcl.errors import ConfigError

__all__ = [
    "AmpMode",
    "Config",
    "ContrastiveMode",
    "DataCache",
    "DataConfig",
    "HeadInit",
    "LossConfig",
    "LossReduction",
    "Method",
    "ModelConfig",
    "MulconConfig",
    "MulconRecipe",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_values",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "field_choices",
    "field_type",
    "load_config",
]

AmpMode = Literal["auto", "off", "fp16", "bf16"]
"""``train.amp``: mixed precision (see :class:`TrainConfig`)."""

Method = Literal["standard", "mulcon"]
"""``train.method``: one stage, or the two MulCon stages (see :class:`TrainConfig`)."""

MulconRecipe = Literal["default", "official"]
"""``mulcon.recipe``: the fine-tuning recipe of the MulCon stages or the official one (:class:`MulconConfig`)."""

DataCache = Literal["auto", "none", "memory"]
"""``data.cache``: the decoded-image cache (see :class:`DataConfig`)."""

HeadInit = Literal["random", "probe"]
"""``train.head_init``: how the linear classifier starts (see :class:`TrainConfig`)."""

ContrastiveMode = Literal["none", "label", "image"]
"""``loss.contrastive``: no contrastive term, or the projection it uses (:data:`~mlcl.models.classifier.
Projection`)."""

LossReduction = Literal["mean", "sum"]

#: ``run.calibrate``: choose per-class thresholds on the validation split at the end of training.
Calibrate = Literal["none", "f1"]
"""``loss.reduction``: the reductions of :data:`mlcl.losses.Reduction` that give a scalar to train on."""


@dataclass
class DataConfig:
    """Data options.

    Attributes:
        train: Training data: ``builtin``, a CSV file, or ``KIND:PATH`` (``coco``, ``voc2007``, ``voc2012``,
            ``nuswide``, ``list``, ``folder``, ``csv``).
        val: Validation data (same forms). ``None``: the dataset's own validation split if it has one
            (``builtin``), else a seeded hold-out of ``val_fraction`` of the training data, recorded in the run
            folder as ``split.json``.
        test: Data evaluated once at the end with the best checkpoint (written to ``metrics.json``). ``None``:
            the dataset's own test split if it has one (``builtin``), else nothing (``metrics.json`` then holds
            the validation metrics).
        image_size: Square input size. ``None``: the dataset's native size (48 for ``builtin``), else 224.
        val_fraction: Fraction held out for validation when ``val`` is not given.
        missing: Missing-label protocol applied to the training targets (``none``, ``drop:R``,
            ``single-positive``, ``keep-half-plus-one``, ``keep-fifth-plus-one``, ``partial:P``).
        missing_seed: Seed of the protocol; ``None`` uses ``train.seed``.
        views: Augmented views per training image (2 for contrastive training).
        augment: Training augmentation preset: ``none``, ``light`` (crops, no flip), ``flip`` (warp + flip, Cole
            et al.), ``default`` (crops, flip, colour jitter), ``strong`` (``default`` + RandAugment), ``asl``
            (warp + Cutout + RandAugment, the ASL/Hill/SPLC/CLML recipe). ``None``: ``light`` for ``builtin`` (digits
            must not be mirrored), ``default`` otherwise.
        mean: Normalisation mean (RGB in [0, 1]); ``None``: the backbone's own (timm's pretrained config).
        std: Normalisation standard deviation; ``None``: the backbone's own.
        num_workers: DataLoader workers (they decode and augment; results do not depend on their number).
        check_images: Check at load time that every image exists and can be opened.
        allow_overlap: Allow training, validation and test sets to share images (an error otherwise, naming
            the count and a few files); recorded in the run's ``config.yaml``.
        cache: Decoded-image cache of the images read every epoch (training, validation, the training images'
            scoring pass), built once before the first epoch: ``auto`` keeps in memory those that fit
            ``cache_gib``, ``memory`` requires all of them to fit (an error otherwise), ``none`` decodes every
            image at every epoch. Each image is kept as uint8 at the size of its transform's deterministic first
            step (``S x S`` for evaluation); the tensors are the same with or without it.
        cache_gib: The cache's memory budget, in GiB (per process; shared by the DataLoader workers).
    """

    train: str = "builtin"
    val: str | None = None
    test: str | None = None
    image_size: int | None = None
    val_fraction: float = 0.1
    missing: str = "none"
    missing_seed: int | None = None
    views: int = 1
    augment: AugmentPreset | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    num_workers: int = 2
    check_images: bool = True
    allow_overlap: bool = False
    cache: DataCache = "auto"
    cache_gib: float = 4.0


@dataclass
class ModelConfig:
    """Model options.

    Attributes:
        backbone: Any timm model name.
        pretrained: Load timm's pretrained weights from its hub (needs internet).
        weights: Local backbone weights (a state dict file), loaded through timm's own file loading.
        head: ``linear`` (global pool + linear) or ``mulcon`` (label-level attention, per-label classifiers).
        drop_rate: Dropout before the linear classifier.
        head_dim: Width ``d`` of the label-level embeddings (mulcon head).
        head_heads: Attention heads (mulcon head).
        head_num_sab: Self-attention blocks on the feature tokens before the label cross-attention.
        proj_hidden: Hidden width of the projection head used by contrastive losses.
        proj_dim: Output width of the projection head.
    """

    backbone: str = "resnet10t"
    pretrained: bool = False
    weights: str | None = None
    head: Head = "linear"
    drop_rate: float = 0.0
    head_dim: int = 1024
    head_heads: int = 4
    head_num_sab: int = 2
    proj_hidden: int = 1024
    proj_dim: int = 128


@dataclass
class LossConfig:
    """Loss options.

    Attributes:
        name: Base loss name (``mlcl list losses``), optionally ``BASE+clml`` to pair it with CLML.
        reduction: ``mean`` (average over the entries the loss counts) or ``sum`` (the official CLML / ASL
            configuration: summed over all entries of the batch).
        options: Extra keyword arguments of the base loss (e.g. ``{gamma_neg: 4}``).
        clml_weight: CLML weight lambda.
        clml_tau: CLML label-correction threshold.
        clml_start_epoch: First (0-based) epoch with CLML's label correction.
        contrastive: ``none``, ``label`` (MulCon's label-level SupCon; needs ``model.head=mulcon``) or
            ``image`` (image-level multi-label SupCon on the pooled embedding).
        contrastive_weight: Weight of the contrastive term.
        con_tau: Contrastive temperature.
        con_base_tau: Contrastive base temperature.
        denominator_size: MulCon's hard-negative fill (0: off).
    """

    name: str = "bce"
    reduction: LossReduction = "mean"
    options: dict[str, Any] = field(default_factory=dict)
    clml_weight: float = 1.0
    clml_tau: float = 0.75
    clml_start_epoch: int = 1
    contrastive: ContrastiveMode = "none"
    contrastive_weight: float = 0.5
    con_tau: float = 0.2
    con_base_tau: float = 0.2
    denominator_size: int = 0


@dataclass
class OptimConfig:
    """Optimiser and schedule.

    Attributes:
        name: ``adam``, ``adamw`` or ``sgd``.
        lr: Peak learning rate of the head (and of every parameter unless ``backbone_lr`` is set). ``None``:
            from scratch 2e-3; with a pretrained backbone (``model.weights`` or ``model.pretrained``) 2e-4 when
            the head starts from the linear probe (``train.head_init=probe``, the default recipe), else 1e-2.
        backbone_lr: Peak learning rate of the backbone; ``None``: ``lr / 50`` for a pretrained backbone with a
            randomly initialised head, else ``lr``.
        attention_lr: Peak learning rate of the mulcon head's attention block; ``None`` uses ``lr``.
        weight_decay: Weight decay (not applied to biases and normalisation weights).
        momentum: SGD momentum.
        betas: Adam betas.
        schedule: ``onecycle``, ``cosine`` (linear warm-up then cosine), ``step`` or ``constant``.
        warmup_epochs: Warm-up length for ``cosine`` (fraction allowed).
        pct_start: Share of the run spent increasing the rate for ``onecycle``.
        step_size: Epochs between decays for ``step``.
        gamma: Decay factor for ``step``.
        min_lr_ratio: Final rate as a fraction of the peak for ``cosine``.
        clip_grad_norm: Clip the gradient norm to this value (``None``: off).
        freeze_backbone_epochs: Keep the backbone's learning rate at 0 for this many epochs while the head
            learns first ("LP-FT"); 0 by default.
        fused: Use the optimiser's fused kernel (one kernel updates every parameter). ``None``: where torch has
            one for the optimiser and the device (CPU and CUDA for adam, adamw and sgd), resolved at start-up.
    """

    name: OptimizerName = "adamw"
    lr: float | None = None
    backbone_lr: float | None = None
    attention_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Schedule = "onecycle"
    warmup_epochs: float = 1.0
    pct_start: float = 0.2
    step_size: int = 20
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    clip_grad_norm: float | None = None
    freeze_backbone_epochs: float = 0.0
    fused: bool | None = None


@dataclass
class TrainConfig:
    """Training loop.

    Attributes:
        method: ``standard`` (one stage) or ``mulcon`` (stage 1 BCE, then stage 2 BCE + contrastive from
            stage 1's EMA weights; see the ``mulcon`` section).
        epochs: Epochs (with ``method=mulcon``: of stage 1 unless ``mulcon.stage1_epochs`` is set, and of stage 2
            unless ``mulcon.stage2_epochs`` is set).
        batch_size: Global batch size (split evenly over processes under torchrun).
        seed: Seed of everything (data order, augmentation, initialisation, missing labels).
        amp: Mixed precision: ``auto``, ``off``, ``fp16``, ``bf16``. ``auto`` resolves at start-up (recorded in
            ``config.yaml``; :mod:`mlcl.engine.speed`): ``fp16`` (with a GradScaler) on CUDA, ``bf16`` on a CPU with
            native bfloat16 instructions (``avx512_bf16`` / ``amx_bf16``), else ``off``. Losses stay in float32.
        channels_last: Keep the model's 4-D weights and the input batches in channels-last memory format (NHWC,
            the native layout of oneDNN's and cuDNN's convolutions). ``None``: on (resolved at start-up).
        compile: Run the training forward through ``torch.compile`` (the first step's time, compilation
            included, is logged). Off by default: on the CPUs measured it compiled for tens of seconds and did
            not make the step faster (BENCHMARKS.md).
        ema: Keep an exponential moving average of the weights (evaluated and saved).
        ema_decay: EMA decay (with timm's warm-up, so short runs work).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        init_from: A checkpoint whose weights initialise the model (EMA weights when it has them).
        max_steps_per_epoch: Truncate every epoch (smoke tests).
        stop_after: Stop after this many epochs while keeping the schedule of ``epochs`` (a run can then be
            continued with ``--resume``).
        eval_every: Evaluate every N epochs (and always after the last).
        head_init: ``random`` (timm/torch initialisation) or ``probe``: before training, fit the classifier as
            a logistic-regression probe on the frozen embeddings of the training images (LP-FT;
            :mod:`mlcl.engine.probe`): the linear head on the pooled embeddings, the mulcon head's per-label
            classifiers each on its label's embeddings. Skipped when resuming. ``None``: ``probe`` under the
            default fine-tuning recipe (a pretrained backbone, the linear head, ``train.method=standard`` and
            ``optim.lr`` not set) and for stage 1 of ``train.method=mulcon`` under ``mulcon.recipe=default``
            with a pretrained backbone, else ``random``.
        probe_c: Inverse L2 strength of that probe (scikit-learn's ``C``, on standardised embeddings).
        probe_images: Fit the probe on this many training images (a random subset seeded by ``train.seed``).
            ``None``: every training image while their embeddings fit in 2**28 floats (1 GiB in float32; the
            pooled probe of a 2048-d backbone takes 131072 images), else a subset of that size: the mulcon
            head's probe holds ``C x d`` floats per image (80 x 1024 on COCO: 3276 images).
        checkpoint_every: Also write a resumable ``last.pt`` in the middle of an epoch, every ``N`` optimiser
            steps (``"500"``) or every ``N`` minutes (``"30m"``); ``None``: at the end of each epoch only. It
            bounds what a hard kill (SIGKILL, power loss) loses; SIGTERM and SIGINT always write one.
        freeze_bn: Keep the backbone's BatchNorm layers in evaluation mode during training: they normalise
            with, and keep, their (pretrained) running statistics; their affine weights still train. Useful
            for small batches and small data, and with ``head_init=probe`` (the probe sees those statistics).
            ``None``: on under the default fine-tuning recipe and ``mulcon.recipe=default`` (as ``head_init``;
            both MulCon stages), else off.
        freeze: Frozen-trunk training (:mod:`mlcl.engine.frozen`, docs/frozen.md): ``none`` (the default: the
            whole model trains), ``all`` (the whole backbone is frozen and only the head, and the projection, train:
            the "linear" setting of Cole et al. 2021) or ``N`` (the stem and the first ``N`` of the backbone's stages,
            as timm groups them, are frozen; the rest trains). The frozen part's output is computed once per image
            (and cached copy) in evaluation mode, cached in float16, and the rest trains from the cache. Under it
            ``data.augment`` defaults to ``none``.
        freeze_copies: Cached copies per image under ``freeze``: ``None`` resolves to 1 for ``data.augment=none``
            (the evaluation transform), 2 for ``flip`` (the image and its mirror: each epoch reads the one the
            fine-tuning run's seeded flip would give), and ``train.epochs`` for any other preset (copy ``k`` is the
            augmentation of epoch ``k``; epoch ``e`` reads copy ``e mod K``).
        freeze_cache: Where the cache lives: ``auto`` (in memory up to ``freeze_cache_mb``, else a file in the run
            folder), ``memory`` or ``file``; the run's ``config.yaml`` records the resolved place.
        freeze_cache_mb: The largest cache held in memory, in MB (2**20 bytes).
    """

    method: Method = "standard"
    epochs: int = 5
    batch_size: int = 32
    seed: int = 0
    amp: AmpMode = "auto"
    channels_last: bool | None = None
    compile: bool = False
    ema: bool = True
    ema_decay: float = 0.999
    device: str = "auto"
    init_from: str | None = None
    max_steps_per_epoch: int | None = None
    stop_after: int | None = None
    eval_every: int = 1
    head_init: HeadInit | None = None
    probe_c: float = 0.01
    probe_images: int | None = None
    freeze_bn: bool | None = None
    checkpoint_every: str | None = None
    freeze: FreezeMode | int = "none"
    freeze_copies: int | None = None
    freeze_cache: CacheStorage = "auto"
    freeze_cache_mb: float = 2048.0


@dataclass
class MulconConfig:
    """The two-stage MulCon schedule (``train.method=mulcon``).

    Stage 1 trains the label-attention head with the base loss only (AdamW, warm-up then cosine, EMA). Stage 2
    starts from stage 1's best (EMA) weights with two views per image and ``base + contrastive_weight * label
    SupCon`` (SGD, step schedule). The ``optim`` section's schedule fields are replaced by the ones here.

    **Run length.** Stage 1 runs ``stage1_epochs`` epochs, or ``train.epochs`` (``--epochs``) when it is null;
    stage 2 runs ``stage2_epochs``, or as many epochs as stage 1 when it is null. Setting both ``train.epochs``
    (to anything but its default) and ``stage1_epochs`` to different values is an error.

    **Recipe.** Fields left null are filled by ``recipe`` (:func:`mlcl.engine.build.resolve_recipe`):

    * ``default`` with a pretrained backbone (``model.weights`` / ``model.pretrained``): the linear head's
      fine-tuning recipe applied to stage 1: the per-label classifiers start from a logistic-regression probe
      on the label-level embeddings of the training images (``train.head_init=probe``), the backbone's
      BatchNorm statistics stay frozen in both stages (``train.freeze_bn=true``), 2e-4 for the backbone and the
      classifiers and 2e-5 for the freshly initialised attention block (so that the label embeddings the probe
      was fitted on drift slowly).
    * ``default`` from scratch: 2e-3 for every parameter, random classifiers, BatchNorm statistics updated (a
      warning says that the label-attention head needs a pretrained backbone).
    * ``official`` (SonDaoDuy/MulCon): random (N(0, 0.02)) classifiers, BatchNorm statistics updated, 2e-4 for
      the attention block and the classifiers and 2e-5 for the backbone.

    Both recipes warm stage 1 up over its first 20 % (the official 5 of 25 epochs) and use the official stage-2
    settings below.

    Attributes:
        recipe: ``default`` or ``official`` (above).
        stage1_epochs: Epochs of stage 1; ``None``: ``train.epochs``.
        stage1_lr: Rate of the classifiers in stage 1; ``None``: 2e-4 (2e-3 from scratch under ``default``).
        stage1_backbone_lr: Backbone rate of stage 1; ``None``: ``stage1_lr`` (``default``) or ``stage1_lr / 10``
            (``official``: 2e-5).
        stage1_attention_lr: Rate of the attention block in stage 1; ``None``: ``stage1_lr / 10`` (``default`` with a
            pretrained backbone), else ``stage1_lr``.
        stage1_warmup_epochs: Linear warm-up of stage 1; ``None``: 20 % of the stage-1 epochs.
        stage2_epochs: Epochs of stage 2; ``None``: the stage-1 epochs.
        stage2_lr: Learning rate of the projector and classifiers in stage 2 (official 0.01).
        stage2_backbone_lr: Learning rate of the backbone and attention block in stage 2 (official 0.001).
        stage2_step_size: StepLR period of stage 2 (official 20).
        stage2_batch_size: Images per batch in stage 2 (each gives two views; official 24).
    """

    recipe: MulconRecipe = "default"
    stage1_epochs: int | None = None
    stage1_lr: float | None = None
    stage1_backbone_lr: float | None = None
    stage1_attention_lr: float | None = None
    stage1_warmup_epochs: float | None = None
    stage2_epochs: int | None = None
    stage2_lr: float = 0.01
    stage2_backbone_lr: float = 0.001
    stage2_step_size: int = 20
    stage2_batch_size: int = 24


@dataclass
class RunConfig:
    """Outputs.

    Attributes:
        out: Run folder; ``None``: ``runs/<UTC timestamp>-<random suffix>``, created atomically.
        overwrite: Replace an existing run folder given by ``out`` (otherwise a run refuses to write into a folder
            that already holds a run; continue one with ``--resume``).
        threshold: Decision threshold of CP/CR/CF1/OP/OR/OF1.
        ap_variant: AP variant reported as ``mAP`` (``nonint``, ``voc11``, ``vocall``, ``mlgcn``; see
            :data:`mlcl.metrics.AP_VARIANTS`).
        progress: Show a progress bar.
        tensorboard: Write TensorBoard events.
        report: Write ``report.html`` when a run ends (a few seconds of drawing; ``false`` for the runs of a large
            grid, whose reports ``mlcl report RUN`` still draws later from the run folder).
        calibrate: ``f1``: at the end, choose per-class thresholds on the validation split (``thresholds.json``
            beside ``best.pt``) and report CF1/OF1 at both the global and the per-class thresholds.
    """

    out: str | None = None
    overwrite: bool = False
    threshold: float = 0.5
    ap_variant: APVariant = "nonint"
    progress: bool = True
    tensorboard: bool = True
    report: bool = True
    calibrate: Calibrate = "none"


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mulcon: MulconConfig = field(default_factory=MulconConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ------------------------------------------------------------------------------------------------ value ranges
# Ranges of the scalars that no component checks when it is built. The arguments of components (loss options,
# schedule, head sizes, optimiser) are checked by the components themselves: see `mlcl.engine.validate`.

_Check = tuple[Callable[[Any], bool], str]


def _at_least(low: float) -> _Check:
    return (lambda v: v >= low), f">= {low}"


def _above(low: float) -> _Check:
    return (lambda v: v > low), f"> {low}"


def _within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> _Check:
    def ok(v: Any) -> bool:
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return ok, f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"


RANGES: dict[str, _Check] = {
    "data.image_size": _at_least(1),
    "data.val_fraction": _within(0, 1, open_low=True, open_high=True),
    "data.views": _at_least(1),
    "data.std": _above(0),
    "data.num_workers": _at_least(0),
    "data.cache_gib": _at_least(0),
    "loss.contrastive_weight": _at_least(0),
    "optim.lr": _at_least(0),
    "optim.backbone_lr": _at_least(0),
    "optim.attention_lr": _at_least(0),
    "optim.weight_decay": _at_least(0),
    "optim.clip_grad_norm": _above(0),
    "optim.freeze_backbone_epochs": _at_least(0),
    "train.epochs": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.ema_decay": _within(0, 1),
    "train.max_steps_per_epoch": _at_least(1),
    "train.stop_after": _at_least(1),
    "train.eval_every": _at_least(1),
    "train.freeze_copies": _at_least(1),
    "train.freeze_cache_mb": _above(0),
    "mulcon.stage1_epochs": _at_least(1),
    "mulcon.stage1_lr": _at_least(0),
    "mulcon.stage1_backbone_lr": _at_least(0),
    "mulcon.stage1_attention_lr": _at_least(0),
    "mulcon.stage1_warmup_epochs": _at_least(0),
    "mulcon.stage2_epochs": _at_least(1),
    "mulcon.stage2_lr": _at_least(0),
    "mulcon.stage2_backbone_lr": _at_least(0),
    "mulcon.stage2_step_size": _at_least(1),
    "mulcon.stage2_batch_size": _at_least(1),
    "run.threshold": _within(0, 1),
}
"""Allowed values of numeric fields (each item of a list field); ``null`` is always allowed where the type is.

Learning rates may be 0: a rate of 0 keeps those parameters where they start (e.g. the probe-initialised head).
"""


def _check_range(key: str, value: Any) -> None:
    if key not in RANGES or value is None:
        return
    ok, allowed = RANGES[key]
    for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
        name = key if i is None else f"{key}[{i}]"
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"`{name}` must be a finite number {allowed}, got {v!r}")
        if not ok(v):
            raise ConfigError(f"`{name}` must be {allowed}, got {v!r}")


def check_values(cfg: Config) -> None:
    """Check every field of ``cfg`` against its type and range (:data:`RANGES`).

    :func:`load_config` checks each value it sets; this checks a :class:`Config` built or changed in code.

    Raises:
        ConfigError: Naming the first key at fault and its value.
    """
    for section in dataclasses.fields(Config):
        values = getattr(cfg, section.name)
        for name, tp in _section_types(type(values)).items():
            key = f"{section.name}.{name}"
            value = getattr(values, name)
            _coerce(value, tp, key)
            _check_range(key, value)


# ------------------------------------------------------------------------------------------------ coercion


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:  # Optional[X]: X's own message, with null allowed
            raise ConfigError(errors[0].replace(", got ", " (or null), got ", 1))
        raise ConfigError(f"`{key}` must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if tp is Any:
        return value
    if origin is Literal:
        return _coerce_literal(value, get_args(tp), key)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{key}` must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"`{key}` must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"`{key}` must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"`{key}` must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"`{key}` must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"`{key}` must be a string, got {value!r}")
    raise ConfigError(f"`{key}`: unsupported type {tp}")


# YAML 1.1 reads `off`, `no`, `on`, `yes` unquoted as booleans (e.g. `-o train.amp=off`).
_YAML_BOOL_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


def _coerce_literal(value: Any, allowed: tuple[Any, ...], key: str) -> Any:
    if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
        words = [a for a in allowed if a in _YAML_BOOL_WORDS[value]]
        if len(words) == 1:
            return words[0]
    for a in allowed:
        if value == a and type(value) is type(a):
            return a
    raise ConfigError(f"`{key}` must be one of {', '.join(str(a) for a in allowed)}, got {value!r}")


def _section_types(section_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def field_type(key: str) -> Any:
    """The annotation of the field ``section.key`` (e.g. ``field_type("optim.schedule")`` is ``Schedule``).

    Raises:
        ConfigError: For a malformed key, or an unknown section or key (the message lists the valid ones).
    """
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"config key must be `section.key`, got {key!r}")
    section_name, name = parts
    sections = typing.get_type_hints(Config)
    if section_name not in sections:
        raise ConfigError(f"unknown config section {section_name!r} in {key!r}; sections: {', '.join(sections)}")
    types_ = _section_types(sections[section_name])
    if name not in types_:
        raise ConfigError(f"unknown config key {key!r}; keys of `{section_name}`: {', '.join(types_)}")
    return types_[name]


def field_choices(key: str) -> tuple[str, ...]:
    """The values allowed for the field ``section.key``: the arguments of its ``Literal`` type (``null`` aside).

    The CLI's ``choices=`` come from here, so that a flag accepts exactly what the configuration accepts.

    Raises:
        ConfigError: For an unknown key or a field whose type is not a ``Literal`` (or an optional one).
    """
    tp = field_type(key)
    if get_origin(tp) in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        tp = options[0] if len(options) == 1 else tp
    if get_origin(tp) is not Literal:
        raise ConfigError(f"`{key}` has no fixed set of values (its type is {_type_name(tp)})")
    return tuple(str(a) for a in get_args(tp))


def _set(cfg: Config, key: str, value: Any) -> None:
    coerced = _coerce(value, field_type(key), key)
    _check_range(key, coerced)
    section_name, name = key.split(".")
    setattr(getattr(cfg, section_name), name, coerced)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Build a :class:`Config` from a nested mapping; unknown sections or keys raise :class:`ConfigError`."""
    cfg = Config()
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {values!r}")
        for key, value in values.items():
            try:
                _set(cfg, f"{section}.{key}", value)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as a plain nested dict (YAML/JSON-able)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to ``cfg`` in place and return it.

    A mapping field also takes one entry at a time: ``loss.options.gamma=2`` sets ``gamma`` in ``loss.options``
    and keeps its other entries.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must be `section.key=value`, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse the value of override {item!r}: {e}") from None
        key = key.strip()
        parts = key.split(".")
        if len(parts) == 3 and parts[2] and get_origin(field_type(".".join(parts[:2]))) is dict:
            section_name, name, entry = parts
            value = {**getattr(getattr(cfg, section_name), name), entry: value}
            key = f"{section_name}.{name}"
        _set(cfg, key, value)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML configuration (or the defaults) and apply overrides.

    Args:
        path: YAML file with sections as top-level keys, or ``None`` for the defaults.
        overrides: ``section.key=value`` strings.

    Returns:
        The resolved :class:`Config`.

    Raises:
        ConfigError: For a missing or unparsable file, an unknown key, or a value of the wrong type.
    """
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        cfg = config_from_dict(data or {}, source=str(p))
    return apply_overrides(cfg, list(overrides or []))


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from mlcl._io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
