"""Writing files atomically: a crash or a full disk never leaves a half-written file
under the final name (the data goes to a temporary file in the same folder, which is
then renamed over the target). A failed write raises one :class:`WriteError` naming the
file and the operating system's reason (e.g. "No space left on device")."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np

from jaxae.errors import ConfigError, WriteError

# What numpy raises for a file that is not a valid .npz/.npy, or holds pickled objects.
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def failure_reason(error: BaseException) -> str:
    """The operating system's reason for a failed write, in a few words: strerror of an
    OSError, or of the ``os_error_code`` that TensorStore (Orbax) puts in its messages;
    else the first line of the message."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None:
        found = re.search(r"os_error_code='?(\d+)", str(error))
        code = int(found.group(1)) if found else None
    if code:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return first[:200]


def write_error(path: str, error: BaseException) -> WriteError:
    """The one-line WriteError for a failed write of ``path``."""
    return WriteError(f"cannot write {path!r}: {failure_reason(error)}")


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turns an OSError raised while writing ``path`` into a one-line :class:`WriteError`."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from None


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path next to ``path``; on success it is renamed to ``path``.

    ``suffix`` is appended to the temporary name for writers that pick the format from
    it (``.npz``, ``.png``). On an exception the temporary file is removed; an OSError
    becomes a :class:`WriteError` naming ``path``.
    """
    tmp = f"{path}.tmp.{os.getpid()}{suffix}"
    try:
        with writing(path):
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
