"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``.

A reader never sees a half-written file: either the old content or the new one. On any failure (including
``KeyboardInterrupt``) the temporary file is removed and the exception propagates; an operating-system failure
(full disk, read-only folder, no permission) becomes one :class:`~mlcl.errors.OutputError` naming the destination,
not the temporary file. The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from mlcl.errors import DataError, OutputError

__all__ = ["atomic_write", "atomic_write_text"]

_umask_lock = threading.Lock()

#: ``errno`` values that mean "no space": the message then says so whatever the library's own wording.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _umask() -> int:
    """The process umask (reading it means setting it; a lock keeps other threads of mlcl from seeing 0)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _reason(exc: BaseException) -> str | None:
    """A short reason for a write failure, or ``None`` if ``exc`` is not an I/O failure.

    ``OSError`` gives its ``strerror``; torch.save reports a full disk as ``RuntimeError: [enforce fail at
    inline_container.cc:...] . PytorchStreamWriter failed writing file ...: file write failed``, recognised by
    its text.
    """
    if isinstance(exc, OSError):
        if exc.errno in _NO_SPACE:
            return "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text:
            lowered = text.lower()
            if "no space" in lowered or "file write failed" in lowered or "enospc" in lowered:
                return "no space left on the device"
            return "write failed: " + text.splitlines()[0][:200]
    return None


def atomic_write(
    path: str | os.PathLike[str], write_fn: Callable[[str], object], *, create_folder: bool = True
) -> None:
    """Write ``path`` atomically through ``write_fn``.

    A temporary file ``.<name>.<random>.tmp`` is created in the destination's folder, ``write_fn(tmp_path)``
    fills it, and ``os.replace(tmp_path, path)`` moves it into place. The temporary file is removed if anything
    fails.

    Args:
        path: Destination file.
        write_fn: Called with the temporary file's path (a ``str``); it must write the whole content there.
        create_folder: Create the destination folder (and its parents) when missing. With ``False`` a missing
            folder raises :class:`~mlcl.errors.DataError`.

    Raises:
        DataError: If ``create_folder`` is ``False`` and the destination folder does not exist.
        OutputError: The folder cannot be created or the file cannot be written (the message names ``path``
            and the reason); an existing ``path`` is left unchanged.
    """
    path = Path(path)
    if not create_folder:
        folder = path.resolve().parent
        if not folder.is_dir():
            raise DataError(f"{path}: folder {folder} does not exist")
    tmp: str | None = None
    try:
        if create_folder:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        reason = None if isinstance(e, OutputError) else _reason(e)
        if reason is None:
            raise
        kept = f" (the previous {path} is unchanged)" if path.exists() else ""
        raise OutputError(f"cannot write {path}: {reason}{kept}", errno=errno_of(e), filename=str(path)) from None


def atomic_write_text(path: str | os.PathLike[str], text: str, *, create_folder: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write` for ``create_folder``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write, create_folder=create_folder)


def errno_of(exc: BaseException) -> int:
    """The ``errno`` of an I/O failure (``ENOSPC`` for torch's full-disk ``RuntimeError``), 0 if unknown."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    return errno.ENOSPC if _reason(exc) == "no space left on the device" else 0
