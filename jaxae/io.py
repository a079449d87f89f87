"""Writing files atomically: a crash or a full disk never leaves a half-written file
under the final name (the data goes to a temporary file in the same folder, which is
then renamed over the target)."""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator

import numpy as np

from jaxae.errors import ConfigError

# What numpy raises for a file that is not a valid .npz/.npy, or holds pickled objects.
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; on success it is renamed to ``path``.

    ``suffix`` is appended to the temporary name for writers that pick the format from
    it (``.npz``, ``.png``). On an exception the temporary file is removed.
    """
    tmp = f"{path}.tmp.{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, never unpickled; ConfigError naming ``what``, the file and
    the problem when it is not a readable .npz of plain arrays."""
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in f.files}
    except NPZ_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{what} {path!r} is not a readable .npz of plain arrays ({reason})") from None
