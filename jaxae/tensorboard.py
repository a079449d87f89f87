"""TensorBoard event files, written in the calling thread.

tensorboardX's ``SummaryWriter`` writes from a background thread: when the disk fills up
that thread dies with a traceback and the next flush waits for it forever. This writer
uses tensorboardX's record format and summary protos but writes in the caller's thread,
so a failed write is one :class:`jaxae.errors.WriteError` naming the folder and the reason,
raised where the loop can stop cleanly. Files are named as tensorboardX names them
(``events.out.tfevents.<time>.<host>``), one per run.
"""

from __future__ import annotations

import os
import time

import numpy as np

from jaxae import io


class EventWriter:
    """Scalars and images of one run in ``logdir``; buffered until :meth:`flush`."""

    def __init__(self, logdir: str):
        from tensorboardX.event_file_writer import EventsWriter

        self.logdir = logdir
        with io.writing(logdir):
            os.makedirs(logdir, exist_ok=True)
            self._events = EventsWriter(os.path.join(logdir, "events"))

    def _write(self, step: int, summary) -> None:
        from tensorboardX.proto.event_pb2 import Event

        with io.writing(self.logdir):
            self._events.write_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX import summary

        self._write(step, summary.scalar(tag, float(value)))

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """``image``: uint8 (H, W, C) with C in {1, 3}."""
        from tensorboardX import summary

        self._write(step, summary.image(tag, np.asarray(image), dataformats="HWC"))

    def flush(self) -> None:
        with io.writing(self.logdir):
            self._events.flush()

    def close(self) -> None:
        with io.writing(self.logdir):
            self._events.close()


class NullWriter:
    """Stands in for :class:`EventWriter` in processes other than 0."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def add_image(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def writer(logdir: str, primary: bool) -> EventWriter | NullWriter:
    """An :class:`EventWriter` for the process that writes files, a :class:`NullWriter` elsewhere."""
    return EventWriter(logdir) if primary else NullWriter()
