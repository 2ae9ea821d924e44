"""Progress of long library calls, reported to the caller, never drawn by the library.

Functions that can take a while accept ``progress``, a :data:`ProgressCallback` they call with
``(done, total)`` as the work advances, from ``(0, total)`` at the start to ``(total, total)`` at
the end (a later ``(0, total)`` starts the next piece of work, e.g. the next video):

* :func:`videoccam.processing.video.load_video`: frames kept of the frames wanted (PyAV backend);
* :func:`videoccam.synth.generate_dataset`: clips written;
* :func:`videoccam.data.run_data_check`: records checked.

The library itself prints nothing and draws no bars (it logs); the ``videoccam`` command passes a
tqdm bar on stderr when stderr is a terminal and ``--quiet`` is not given.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: ``done`` of ``total`` units of work are finished."""

__all__ = ["ProgressCallback"]
