"""The speed options of a run, decided once at start-up from the hardware it runs on.

A training stage resolves four options before it builds anything that depends on them
(:func:`resolve_speed`), records the resolved values in its ``config.yaml`` and names them in its first log line
(:func:`describe_speed`):

* ``train.amp`` (``auto``): float16 autocast with a GradScaler on CUDA; **float32 on every CPU**. bf16 autocast
  (``train.amp=bf16``) is an option: on the 2-core AVX512-BF16 CPU of BENCHMARKS.md ("Training and prediction
  speed") it made Lite0's training step slower than channels-last alone (0.85x at 224 px, 0.71x at 160 px), so
  the rule "bf16 where it is at least as fast" leaves it off; CPUs with AMX tiles were not measured. Every loss
  is computed in float32 either way (:class:`~mlcl.engine.objective.Objective` casts the model's outputs).
  :func:`native_bf16` tells whether a CPU has native bf16 instructions (shown in the first log line).
* ``train.channels_last`` (``None``): the model's 4-D weights and the input batches in channels-last memory
  format (NHWC), which oneDNN's and cuDNN's convolution kernels use natively (no reordering before and after
  each convolution).
* ``optim.fused`` (``None``): the optimiser's fused kernel (one kernel for every parameter's update) where torch
  has one for the device, else its ``foreach`` path.
* ``train.compile`` (``False``): ``torch.compile`` on the training forward (its compile time is logged with the
  first step). Off by default: on the 2-core CPU measured in BENCHMARKS.md it compiled for tens of seconds and
  did not make the step faster.

The rule is a function of the hardware alone (no timing at start-up), so that one command gives one result on one
machine. BENCHMARKS.md ("Training and prediction speed") measures each option against the plain float32 loop.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from mlcl.engine.config import Config

__all__ = ["NATIVE_BF16_FLAGS", "cpu_flags", "describe_speed", "fused_supported", "native_bf16", "resolve_speed"]

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: AVX512-BF16 dot products, AMX tiles.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (Linux); empty where the file is unreadable."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` computes in bfloat16 natively.

    Args:
        device: The device.
        flags: The CPU flags (default: :func:`cpu_flags`); a CPU has native bf16 when it has one of
            :data:`NATIVE_BF16_FLAGS`.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def fused_supported(optimizer: str, device: torch.device) -> bool:
    """Whether torch has a fused kernel for ``optimizer`` (``adam``, ``adamw``, ``sgd``) on ``device``'s type."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return optimizer in ("adam", "adamw", "sgd") and device.type in _get_fused_kernels_supported_devices()


def resolve_speed(cfg: Config, device: torch.device) -> Config:
    """Fill ``train.amp`` (from ``auto``), ``train.channels_last`` and ``optim.fused`` (from ``None``), in place.

    The rule depends on the device alone, not on the CPU's flags (see the module docstring for bf16).

    Args:
        cfg: The configuration (modified and returned).
        device: Where the run trains.

    Returns:
        ``cfg``, with ``train.amp`` one of ``off``/``bf16``/``fp16`` and both booleans set.
    """
    t = cfg.train
    if t.amp == "auto":
        t.amp = "fp16" if device.type == "cuda" else "off"
    if t.channels_last is None:
        t.channels_last = device.type in ("cpu", "cuda")
    if cfg.optim.fused is None:
        cfg.optim.fused = fused_supported(cfg.optim.name, device)
    return cfg


def describe_speed(cfg: Config, device: torch.device, *, flags: frozenset[str] | None = None) -> str:
    """The run's first log line: the resolved speed options and why (``cfg`` resolved by :func:`resolve_speed`)."""
    t = cfg.train
    if device.type == "cpu":
        found = [f for f in NATIVE_BF16_FLAGS if f in (cpu_flags() if flags is None else flags)]
        cpu = f"{platform.machine() or 'cpu'} {torch.backends.cpu.get_cpu_capability()}"
        where = f"CPU ({cpu}, {torch.get_num_threads()} threads, native bf16: {', '.join(found) or 'no'})"
    else:
        where = str(device)
    amp = {"off": "float32", "bf16": "bf16 autocast", "fp16": "float16 autocast"}.get(t.amp, t.amp)
    parts = [
        amp + " (losses in float32)" if t.amp != "off" else amp,
        "channels-last" if t.channels_last else "contiguous (NCHW)",
        f"{'fused' if cfg.optim.fused else 'foreach'} {cfg.optim.name}",
        "torch.compile" if t.compile else "eager",
    ]
    return f"speed on {where}: {', '.join(parts)}"
