"""Writing files atomically: a crash or a full disk never leaves a half-written file
under the final name (the data goes to a temporary file in the same folder, which is
then renamed over the target)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


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
