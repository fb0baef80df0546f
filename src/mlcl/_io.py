"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``.

A reader never sees a half-written file: either the old content or the new one. On any failure (including
``KeyboardInterrupt``) the temporary file is removed and the exception propagates.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlcl.errors import DataError

__all__ = ["atomic_write", "atomic_write_text"]


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
    """
    path = Path(path)
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        folder = path.resolve().parent
        if not folder.is_dir():
            raise DataError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, create_folder: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write` for ``create_folder``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write, create_folder=create_folder)
