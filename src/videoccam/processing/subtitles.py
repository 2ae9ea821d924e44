"""Subtitle lines at sampled timestamps (Video-MME protocol), read with pysubs2 (.srt, .ass, .vtt, ...).

For each timestamp ``t`` (seconds) the answer is the text of the first cue, in file order, whose
interval contains ``t`` as Video-CCAM and Video-MME check it: ``start < t_ms <= end`` with
``t_ms = round(t * 1000)``. Formatting is removed: ASS override tags (``{\\i1}``), the SRT/HTML
tags pysubs2 keeps or converts (``<font ...>``, ``<i>``), and line breaks (``\\N``, ``\\n``)
become single spaces. No cue gives ``""``.

To join the lines into the Video-MME prompt, keep the non-empty ones in order (repeats
included) and join them with newlines, as Video-CCAM does::

    lines = load_subtitles(srt, video.timestamps)
    text = "\\n".join(line for line in lines if line)

For bit-for-bit parity with Video-CCAM, which converts frame indices with pysubs2's
``make_time(fps=..., frames=idx)``, pass ``video.indices / video.fps`` as the timestamps.

:func:`subtitle_prompt` puts that text under the Video-MME header, to go before a question.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from videoccam.errors import MediaDecodeError, MediaNotFoundError

logger = logging.getLogger(__name__)

# the Video-MME protocol's line above the subtitles (Video-CCAM's prompt uses it too)
SUBTITLE_HEADER = "This video's subtitles are listed below:"

_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACES = re.compile(r"\s+")


def clean_subtitle_text(plaintext: str) -> str:
    """One line of text: tags stripped, line breaks and runs of spaces made single spaces."""
    return _SPACES.sub(" ", _HTML_TAG.sub("", plaintext)).strip()


def _load(path: Path):
    import pysubs2  # optional dependency (the ``video`` extra)

    try:
        try:
            return pysubs2.load(str(path), encoding="utf-8-sig")
        except UnicodeDecodeError:
            logger.warning("%s: not UTF-8, reading it as Latin-1", path)
            return pysubs2.load(str(path), encoding="latin-1")
    except (pysubs2.exceptions.Pysubs2Error, ValueError, OSError) as err:
        raise MediaDecodeError(f"{path}: not a readable subtitle file ({err})") from err


def load_subtitles(path: str | Path, timestamps: Sequence[float] | np.ndarray) -> list[str]:
    """The subtitle line shown at each timestamp.

    Args:
        path: Subtitle file (any format pysubs2 reads: .srt, .ass/.ssa, .vtt, ...).
        timestamps: Seconds, e.g. ``video.timestamps``.

    Returns:
        One string per timestamp, ``""`` where no cue is shown.

    Raises:
        MediaNotFoundError: ``path`` does not exist.
        MediaDecodeError: The file cannot be parsed as subtitles.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaNotFoundError(f"{path}: no such subtitle file")
    cues = [
        (event.start, event.end, clean_subtitle_text(event.plaintext))
        for event in _load(path)
        if not event.is_comment
    ]
    lines = []
    for seconds in np.asarray(timestamps, dtype=np.float64).reshape(-1):
        t_ms = round(float(seconds) * 1000)
        lines.append(next((text for start, end, text in cues if start < t_ms <= end), ""))
    return lines


def subtitle_prompt(lines: Sequence[str]) -> str:
    """The subtitle block that goes before a question, as Video-MME (and Video-CCAM) prompt it.

    The header line, then the non-empty ``lines`` in order (repeats kept), one a line, each line
    ending with a newline; no line at all leaves an empty line (Video-CCAM's missing-subtitle case)::

        subtitle_prompt(["Hello.", "", "Hello.", "Bye."]) + question
        # "This video's subtitles are listed below:\nHello.\nHello.\nBye.\n" + question

    Args:
        lines: One subtitle line per sampled frame, ``""`` where none (:func:`load_subtitles`).
    """
    return SUBTITLE_HEADER + "\n" + "\n".join(line for line in lines if line) + "\n"
