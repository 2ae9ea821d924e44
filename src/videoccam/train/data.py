"""Training data: LLaVA-format records -> tokenized samples -> padded batches, in an exactly resumable order.

    dataset = LlavaDataset("train.jsonl", processor, num_frames=16, max_length=4096)
    sampler = ResumableBatchSampler(dataset.lengths, micro_batch_size=2, num_replicas=world, rank=rank,
                                    grad_accum=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=4,
                        collate_fn=functools.partial(collate, pad_token_id=processor.tokenizer.pad_token_id))
    for epoch in range(state_epoch, num_epochs):
        dataset.set_epoch(epoch); sampler.set_epoch(epoch)   # keeps a loaded resume position of that epoch
        for batch in loader:
            ...forward/backward on batch...
            sampler.advance()                              # one micro-batch consumed by the trainer
            if optimizer_stepped: checkpoint["data"] = sampler.state_dict()

See ``docs/training-data.md`` for the data format and ``videoccam data check`` for validating a file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from videoccam.errors import ConfigError, MediaError, MediaNotFoundError, VideoCCAMError
from videoccam.processing.processor import IGNORE_INDEX, VideoCCAMProcessor, check_turn_weight
from videoccam.processing.video import load_video

__all__ = [
    "PROBLEM_KINDS", "DataCheckReport", "DataRecordError", "LlavaDataset", "Problem", "ResumableBatchSampler",
    "Sample", "check_dataset", "collate", "item_seed", "read_records", "record_to_conversation",
    "run_data_check",
]

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PROBLEM_KINDS = ("json", "schema", "placeholders", "empty", "missing", "decode", "too_long")
SKIP_REASONS = ("missing", "decode", "too_long")
_LOAD_ONLY_KWARGS = ("size", "timeout", "backend", "frame_folder_fps")  # the video_kwargs that images use too
_MAX_WARNINGS = 20  # per process and kind of event; further ones are logged at DEBUG
_MAX_WORKERS = 64  # rows of the shared skip counters (main process + DataLoader workers)
_WS = re.compile(r"[ \t\n\r]*")


class DataRecordError(VideoCCAMError, ValueError):
    """A training record is malformed; ``kind`` is one of :data:`PROBLEM_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Sample:
    """One tokenized, media-loaded training example."""

    index: int  # dataset index
    input_ids: torch.Tensor  # [L] long
    labels: torch.Tensor  # [L] long, IGNORE_INDEX outside assistant turns
    pixel_values: torch.Tensor | None  # [N, 3, H, W], the frames of all its media items in placeholder order
    frame_counts: list[int]  # [M] frames per media item (an image counts 1)
    loss_weights: torch.Tensor | None = None  # [L] float, the turns' weights on labelled tokens; None: all 1


@dataclass
class Problem:
    """One problem found by :func:`check_dataset`.

    ``line`` is the 1-based line of the file where the record starts (for a JSON list too: the line
    of its opening brace), 0 for a problem of the whole file.
    """

    line: int
    id: str | None
    kind: str  # one of PROBLEM_KINDS
    message: str


# ---------------------------------------------------------------------------------------------- reading
def read_records(path: str | Path) -> list[dict]:
    """Read a LLaVA JSON file (a list of records) or a JSONL file (one record per line; blank lines ok).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataRecordError: malformed JSON or a record that is not an object (the message names the
            file and line).
    """
    return [record for _, record in _read_numbered(Path(path))]


def _read_numbered(path: Path, problems: list[Problem] | None = None) -> list[tuple[int, dict]]:
    """``(line, record)`` pairs. With ``problems`` given, bad records are appended there and skipped
    (after a syntax error inside a JSON list nothing further can be read); otherwise the first raises."""

    def bad(line: int, kind: str, message: str) -> None:
        if problems is None:
            raise DataRecordError(kind, f"{path}:{line}: {message}")
        problems.append(Problem(line, None, kind, message))

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        bad(0, "json", f"not UTF-8 text ({err.reason} at byte {err.start})")
        return []
    start = _WS.match(text).end()
    records: list[tuple[int, dict]] = []
    if start < len(text) and text[start] == "[":
        _parse_json_list(text, start + 1, records, bad)
    else:
        decoder = json.JSONDecoder()
        for number, raw in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a string
            if not raw.strip():
                continue
            try:
                record = decoder.decode(raw)
            except json.JSONDecodeError as err:
                bad(number, "json", f"invalid JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(record, dict):
                bad(number, "schema", f"a record must be a JSON object, got {type(record).__name__}")
                continue
            records.append((number, record))
    if not records and problems is not None and not problems:
        bad(0, "json", "the file holds no records")
    return records


def _parse_json_list(text: str, pos: int, records: list[tuple[int, dict]],
                     bad: Callable[[int, str, str], None]) -> None:
    """Parse ``[record, record, ...]`` element by element, keeping the line where each starts."""
    decoder = json.JSONDecoder()
    line, line_pos = 1, 0

    def line_of(at: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, at)
        line_pos = at
        return line

    pos = _WS.match(text, pos).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                bad(err.lineno, "json", f"invalid JSON: {err.msg} (column {err.colno}); the rest of the list "
                    "cannot be read")
                return
            number = line_of(pos)
            if isinstance(record, dict):
                records.append((number, record))
            else:
                bad(number, "schema", f"a record must be a JSON object, got {type(record).__name__}")
            pos = _WS.match(text, end).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
                continue
            if text.startswith("]", pos):
                pos += 1
                break
            bad(line_of(pos), "json", "invalid JSON: expected ',' or ']' after a record; the rest of the list "
                "cannot be read")
            return
    if _WS.match(text, pos).end() != len(text):
        bad(line_of(pos), "json", "invalid JSON: extra data after the closing ']'")


# ----------------------------------------------------------------------------------- record -> messages
@dataclass
class _Parsed:
    messages: list[dict]  # chat messages with placeholders
    media: list[str]  # paths in placeholder order (strings: pathlib is slow over a million records)
    kinds: list[str]  # "video" | "image" per media item


def record_to_conversation(record: dict, media_root: str | Path | None) -> tuple[list[dict], list[Path]]:
    """A LLaVA record -> chat messages (keeping ``<video>``/``<image>`` placeholders) and media paths.

    The k-th ``<video>`` placeholder (counted over the whole conversation) gets the k-th path of the
    record's ``video`` field and the k-th ``<image>`` the k-th path of ``image``, so the returned
    paths are in placeholder order. A record with media but no placeholder at all gets one per item
    (videos first) prepended to its first human turn. Relative paths are resolved against
    ``media_root`` (kept as given when it is ``None``).

    Raises:
        DataRecordError: (a ``ValueError``) naming the field at fault; its ``kind`` is ``"schema"``
            (missing/invalid fields, unknown ``from``, turns not alternating human/gpt or not ending
            with gpt), ``"placeholders"`` (placeholder count != media count, or a placeholder outside a
            human turn) or ``"empty"`` (an empty answer).
    """
    parsed = _parse_record(record, None if media_root is None else Path(media_root))
    return parsed.messages, [Path(m) for m in parsed.media]


def _parse_record(record: dict, media_root: Path | None, image_token: str = IMAGE_PLACEHOLDER,
                  video_token: str = VIDEO_PLACEHOLDER) -> _Parsed:
    def fail(kind: str, message: str) -> DataRecordError:
        return DataRecordError(kind, message)

    if not isinstance(record, dict):
        raise fail("schema", f"a record must be a JSON object, got {type(record).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise fail("schema", "field 'conversations' must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise fail("schema", f"conversations[{i}] must be an object with 'from' and 'value'")
        source, value = turn.get("from"), turn.get("value")
        if not isinstance(source, str) or source not in ROLES:
            raise fail("schema", f"conversations[{i}].from is {source!r}; expected 'human', 'gpt' or 'system'")
        if not isinstance(value, str):
            raise fail("schema", f"conversations[{i}].value must be a string, got {type(value).__name__}")
        messages.append({"role": ROLES[source], "content": value})
        if "weight" in turn:
            try:
                messages[-1]["weight"] = check_turn_weight(turn["weight"], ROLES[source], f"conversations[{i}]")
            except ValueError as err:
                raise fail("schema", str(err)) from None
    offset = 1 if messages[0]["role"] == "system" else 0
    body = messages[offset:]
    if not body:
        raise fail("schema", "field 'conversations' has no human/gpt turns")
    for j, msg in enumerate(body):
        expected = "user" if j % 2 == 0 else "assistant"
        if msg["role"] != expected:
            got, want = turns[j + offset]["from"], "human" if expected == "user" else "gpt"
            where = "a 'system' turn is only allowed first" if msg["role"] == "system" else (
                f"turns must alternate human, gpt, ... (got {got!r} where {want!r} was expected)")
            raise fail("schema", f"conversations[{j + offset}].from: {where}")
    if body[-1]["role"] != "assistant":
        raise fail("schema", "field 'conversations' must end with a 'gpt' turn (nothing to learn after it)")
    videos, images = _media_field(record, "video"), _media_field(record, "image")

    pattern = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(IMAGE_PLACEHOLDER)})")
    for i, msg in enumerate(messages):
        if msg["role"] != "user" and pattern.search(msg["content"]):
            raise fail("placeholders", f"conversations[{i}]: placeholders are only allowed in human turns")
    found = [m.group(0) for msg in messages for m in pattern.finditer(msg["content"])]
    num_v, num_i = found.count(VIDEO_PLACEHOLDER), found.count(IMAGE_PLACEHOLDER)
    if not found and (videos or images):
        first = next(msg for msg in messages if msg["role"] == "user")
        first["content"] = f"{VIDEO_PLACEHOLDER}\n" * len(videos) + f"{IMAGE_PLACEHOLDER}\n" * len(images) + (
            first["content"])
        found = [VIDEO_PLACEHOLDER] * len(videos) + [IMAGE_PLACEHOLDER] * len(images)
    elif num_v != len(videos) or num_i != len(images):
        raise fail("placeholders", f"{num_v} {VIDEO_PLACEHOLDER} placeholder(s) for {len(videos)} path(s) in "
                   f"'video' and {num_i} {IMAGE_PLACEHOLDER} for {len(images)} in 'image'")
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant" and not msg["content"].strip():
            raise fail("empty", f"conversations[{i}]: empty answer")

    queues = {VIDEO_PLACEHOLDER: iter(videos), IMAGE_PLACEHOLDER: iter(images)}
    media = [_resolve(next(queues[tag]), media_root) for tag in found]
    kinds = ["video" if tag == VIDEO_PLACEHOLDER else "image" for tag in found]
    if (image_token, video_token) != (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER):  # the processor's own spelling
        swap = {VIDEO_PLACEHOLDER: video_token, IMAGE_PLACEHOLDER: image_token}
        for msg in messages:
            msg["content"] = pattern.sub(lambda m: swap[m.group(0)], msg["content"])
    return _Parsed(messages, media, kinds)


def _media_field(record: dict, name: str) -> list[str]:
    value = record.get(name)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise DataRecordError("schema", f"field {name!r} must be a path or a list of paths, got {value!r}")
    return items


def _resolve(path: str, media_root: Path | None) -> str:
    return path if media_root is None or os.path.isabs(path) else os.path.join(media_root, path)


def _record_id(record: Any) -> str | None:
    rid = record.get("id") if isinstance(record, dict) else None
    return None if rid is None else str(rid)


def _token_lengths(processor: VideoCCAMProcessor, conversations: Sequence[list[dict]],
                   num_media: Sequence[int], chunk: int = 1024) -> list[int | None]:
    """Exact token counts (text + Q per placeholder) from the rendered template, media not touched.

    ``None`` where the rendered text does not hold exactly one placeholder token per media item.
    """
    tokenizer, q = processor.tokenizer, processor.num_visual_tokens
    visual = {processor.image_token_id, processor.video_token_id}
    out: list[int | None] = []
    for s in range(0, len(conversations), chunk):
        texts = tokenizer.apply_chat_template(
            list(conversations[s:s + chunk]), chat_template=processor.chat_template, tokenize=False,
            add_generation_prompt=False,
        )
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for ids, n in zip(encoded, num_media[s:s + chunk]):
            placeholders = sum(1 for t in ids if t in visual)
            out.append(len(ids) + placeholders * (q - 1) if placeholders == n else None)
    return out


# ---------------------------------------------------------------------------------------------- dataset
def item_seed(seed: int, epoch: int, index: int, item: int) -> int:
    """Seed of the random frame sampling of media item ``item`` of sample ``index`` in ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, index, item]).generate_state(1)[0])


class _PackedList:
    """Picklable items in one byte buffer: forked DataLoader workers read them without touching
    Python reference counts, so the pages stay shared (a plain list of dicts is copied per worker)."""

    def __init__(self, items: Sequence[Any]) -> None:
        blobs = [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]
        self._offsets = np.cumsum([0, *(len(b) for b in blobs)], dtype=np.int64)  # [n + 1]
        self._data = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> Any:
        return pickle.loads(memoryview(self._data[self._offsets[i]:self._offsets[i + 1]]))


_FRAME_CACHE: dict[tuple, np.ndarray] = {}


def _cache_key(path: str | Path, num_frames: int, sample: str, kwargs: dict[str, Any]) -> tuple:
    return (str(path), num_frames, sample, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))


def cached_frames(path: str | Path, num_frames: int, sample: str, video_kwargs: dict[str, Any] | None = None,
                  ) -> np.ndarray:
    """``load_video(path, num_frames, sample, **video_kwargs).frames`` (uint8 ``[T, H, W, 3]``), decoded
    once per process: later calls with the same arguments return the cached array (read-only)."""
    kwargs = dict(video_kwargs or {})
    key = _cache_key(path, num_frames, sample, kwargs)
    frames = _FRAME_CACHE.get(key)
    if frames is None:
        frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames
        frames.setflags(write=False)
        _FRAME_CACHE[key] = frames
    return frames


# what the pixel cache keeps of each clip, by cached_pixels key: the image processor's resize alone,
# uint8 [T, 3, S, S] (``_resized``), or its float32 pixels where that split is not exact (``_compact``).
# numpy, not torch: the ablation fills it in a process that forks its trainers later, and a process
# that ran torch's OpenMP thread pool cannot safely fork one that uses it again.
_RESIZED_CACHE: dict[tuple, np.ndarray] = {}
# per image-processor setting: does rescale + normalise of the uint8 resize give its own pixels, bit for bit?
_SPLIT_EXACT: dict[str, bool] = {}


def _pixel_key(path: str | Path, num_frames: int, sample: str, kwargs: dict[str, Any], processor_key: str) -> tuple:
    return (*_cache_key(path, num_frames, sample, kwargs), processor_key)


def _pixels(image_processor: Any, frames: np.ndarray | list[np.ndarray], **options: Any) -> np.ndarray:
    """``image_processor`` on ``frames`` (``[T, H, W, 3]``) with ``options``, stacked: ``[T, 3, S, S]``."""
    return np.stack(image_processor(images=list(frames), **options)["pixel_values"])


def _resized(image_processor: Any, frames: np.ndarray) -> np.ndarray:
    """The image processor's resize alone: ``[T, 3, S, S]`` (uint8 for PIL backends)."""
    return _pixels(image_processor, frames, do_rescale=False, do_normalize=False)


def _finished(image_processor: Any, resized: np.ndarray) -> np.ndarray:
    """Rescale and normalise of :func:`_resized` frames: the processor's float ``[T, 3, S, S]`` pixels."""
    return _pixels(image_processor, resized.transpose(0, 2, 3, 1), do_resize=False)  # from [T, S, S, 3]


def _compact(image_processor: Any, processor_key: str, frames: np.ndarray) -> np.ndarray:
    """What the pixel cache keeps of one clip's frames (uint8 ``[T, H, W, 3]``): its uint8 resize
    ``[T, 3, S, S]`` (a quarter of the float pixels) when finishing it gives the processor's own pixels
    exactly, checked once per processor setting and process; otherwise the float pixels themselves."""
    exact = _SPLIT_EXACT.get(processor_key)
    if exact is False:
        return _pixels(image_processor, frames)  # [T, 3, S, S]
    resized = _resized(image_processor, frames)  # [T, 3, S, S]
    if exact is None:
        full = _pixels(image_processor, frames)  # [T, 3, S, S]
        finished = _finished(image_processor, resized) if resized.dtype == np.uint8 else None
        exact = finished is not None and finished.dtype == full.dtype and np.array_equal(finished, full)
        _SPLIT_EXACT[processor_key] = exact
        if not exact:
            logger.info("pixel cache: this image processor's resize is not exact in uint8; caching float pixels")
            return full
    return resized


def cached_pixels(path: str | Path, num_frames: int, sample: str, processor: VideoCCAMProcessor,
                  video_kwargs: dict[str, Any] | None = None, *, processor_key: str | None = None) -> torch.Tensor:
    """``processor.preprocess_media`` of the clip's frames (``[T, 3, H, W]``), exactly, decoded and
    resized once per process and image-processor setting: the cache keeps the resized frames as
    uint8 (:func:`warm_pixel_cache` fills it ahead, in parallel) and each call only rescales and
    normalises them, so later epochs skip decoding and resizing every frame.

    ``processor_key``: ``processor.image_processor.to_json_string()``, for callers that compute it
    once instead of on every call.
    """
    kwargs = dict(video_kwargs or {})
    image_processor = processor.image_processor
    if processor_key is None:
        processor_key = image_processor.to_json_string()
    key = _pixel_key(path, num_frames, sample, kwargs, processor_key)
    stored = _RESIZED_CACHE.get(key)
    if stored is None:
        frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames  # [T, H, W, 3]
        stored = _RESIZED_CACHE[key] = _compact(image_processor, processor_key, frames)
        stored.setflags(write=False)
    pixels = _finished(image_processor, stored) if stored.dtype == np.uint8 else stored.copy()  # [T, 3, S, S]
    return torch.from_numpy(pixels)


def warm_frame_cache(paths: Sequence[str | Path], num_frames: int, sample: str,
                     video_kwargs: dict[str, Any] | None = None, workers: int = 2) -> None:
    """Decode ``paths`` into the :func:`cached_frames` cache with a process pool (clips that fail are
    left out: the dataset reports them when it loads them)."""
    kwargs = dict(video_kwargs or {})
    for path, frames in _pool_map(paths, num_frames, sample, kwargs, None, workers):
        frames.setflags(write=False)
        _FRAME_CACHE[_cache_key(path, num_frames, sample, kwargs)] = frames


def warm_pixel_cache(paths: Sequence[str | Path], num_frames: int, sample: str, processor: VideoCCAMProcessor,
                     video_kwargs: dict[str, Any] | None = None, workers: int = 2) -> None:
    """Decode and resize ``paths`` into the :func:`cached_pixels` cache with a process pool, for the
    training datasets (``cache_frames``) of this process and of the processes it forks later (clips
    that fail are left out: the dataset reports them when it loads them)."""
    kwargs = dict(video_kwargs or {})
    image_processor = processor.image_processor
    processor_key = image_processor.to_json_string()
    paths = list(paths)
    if paths and processor_key not in _SPLIT_EXACT:  # settle exactness here, once, not in every pool worker
        try:
            cached_pixels(paths[0], num_frames, sample, processor, kwargs, processor_key=processor_key)
        except (MediaError, OSError):
            pass  # each pool worker settles it on its first clip instead
    compact = (image_processor, processor_key, _SPLIT_EXACT.get(processor_key))
    for path, stored in _pool_map(paths, num_frames, sample, kwargs, compact, workers):
        stored.setflags(write=False)
        _RESIZED_CACHE[_pixel_key(path, num_frames, sample, kwargs, processor_key)] = stored


def _pool_map(paths: Sequence[str | Path], num_frames: int, sample: str, kwargs: dict[str, Any],
              compact: tuple | None, workers: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, _decode_or_none(path, ...))`` for each distinct path that decodes, from a process pool."""
    from concurrent.futures import ProcessPoolExecutor

    todo = [str(p) for p in dict.fromkeys(map(str, paths))]
    n = len(todo)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_or_none, todo, [num_frames] * n, [sample] * n, [kwargs] * n, [compact] * n,
                           chunksize=32)
        for path, result in zip(todo, results):
            if result is not None:
                yield path, result


def _decode_or_none(path: str, num_frames: int, sample: str, kwargs: dict[str, Any],
                    compact: tuple | None) -> np.ndarray | None:
    """A clip's frames (``compact`` None) or what the pixel cache keeps of them (``compact``: the image
    processor, its key and whether its split is exact); ``None`` when it cannot be decoded."""
    try:
        frames = load_video(path, num_frames=num_frames, sample=sample, **kwargs).frames  # [T, H, W, 3]
    except (MediaError, OSError):
        return None
    if compact is None:
        return frames
    image_processor, processor_key, exact = compact
    if exact is not None:
        _SPLIT_EXACT[processor_key] = exact  # the parent's verdict: a pool worker does not check again
    return _compact(image_processor, processor_key, frames)


class LlavaDataset(Dataset):
    """A LLaVA JSON/JSONL training file as tokenized samples with their frames.

    At construction every record is parsed and tokenized (media are not opened): records with
    structural problems (the kinds ``schema``, ``placeholders``, ``empty``, and ``too_long`` when
    ``max_length`` is set) are left out with a warning naming their line and id, counted in
    :attr:`excluded`; dataset indices number the remaining records in file order. Media problems
    show up when a sample is loaded: :meth:`__getitem__` then returns ``None`` (see :func:`collate`).

    Args:
        path: the JSON or JSONL file.
        processor: the model's :class:`VideoCCAMProcessor`.
        media_root: folder that relative media paths are resolved against (default: the folder of
            ``path``).
        num_frames: frames sampled per video.
        sample: frame sampling of videos (``"random"``: one random frame per uniform segment; see
            :func:`videoccam.processing.video.load_video`). Images always give one frame.
        max_length: records over this many tokens (visual tokens included) are left out.
        seed: seed of the random frame sampling; the frames of item ``k`` of sample ``i`` in epoch
            ``e`` depend only on ``(seed, e, i, k)`` (:func:`item_seed`), never on a global RNG, so a
            resumed run and every DDP rank see the same frames.
        video_kwargs: further :func:`load_video` options (``size``, ``timeout``, ``fps``,
            ``max_frames``, ``backend``, ...); ``size``, ``timeout`` and ``backend`` apply to images too.

    cache_frames: keep every video's frames, resized by the image processor, in memory as uint8,
            shared by all datasets of the process and the processes it forks later (several runs
            decode each clip once; :func:`warm_pixel_cache` fills it in parallel), for datasets
            trained several epochs with deterministic sampling; each sample then only rescales and
            normalises them, giving the processor's pixels bit for bit (see :func:`cached_pixels`).
            Memory per clip: frames x 3 x S x S bytes at the model's image size S.

    The epoch and the skip counters live in shared memory, so :meth:`set_epoch` in the main process
    reaches DataLoader workers, persistent ones included, and :attr:`skipped` sums all workers.
    """

    def __init__(self, path: str | Path, processor: VideoCCAMProcessor, *, media_root: str | Path | None = None,
                 num_frames: int = 16, sample: str = "random", max_length: int | None = None, seed: int = 0,
                 video_kwargs: dict[str, Any] | None = None, cache_frames: bool = False) -> None:
        if cache_frames and sample == "random":
            raise ConfigError("cache_frames needs deterministic frames: sample='uniform' (or 'fps'/'mvbench'), "
                              "not 'random'")
        self.cache_frames = cache_frames
        # the image processor's settings, part of every cached_pixels key: serialised once, not per sample
        self._processor_key = processor.image_processor.to_json_string() if cache_frames else None
        self.path = Path(path)
        self.processor = processor
        self.media_root = Path(media_root) if media_root is not None else self.path.parent
        self.num_frames, self.sample, self.max_length, self.seed = num_frames, sample, max_length, seed
        self.video_kwargs = dict(video_kwargs or {})
        self._check_options()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skip_counts = torch.zeros(_MAX_WORKERS + 1, len(SKIP_REASONS), dtype=torch.int64).share_memory_()
        self._warned = 0
        self.excluded: Counter[str] = Counter()

        parsed: list[tuple[int, str | None, _Parsed]] = []
        for line, record in _read_numbered(self.path):
            rid = _record_id(record)
            try:
                parsed.append((line, rid, _parse_record(
                    record, self.media_root, processor.image_token, processor.video_token)))
            except DataRecordError as err:
                self._exclude(line, rid, err.kind, str(err))
        counts = _token_lengths(processor, [p.messages for _, _, p in parsed], [len(p.media) for _, _, p in parsed])
        entries, lengths = [], []
        for (line, rid, p), n in zip(parsed, counts):
            if n is None:
                self._exclude(line, rid, "placeholders", "the text holds placeholder tokens besides the media's")
            elif max_length is not None and n > max_length:
                self._exclude(line, rid, "too_long", f"{n} tokens > max_length {max_length}")
            else:
                entries.append((line, rid, p.messages, p.media, p.kinds))
                lengths.append(n)
        if self.excluded:
            logger.warning("%s: left out %d record(s): %s", self.path, sum(self.excluded.values()),
                           ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())))
        if not entries:
            raise ConfigError(f"{self.path}: no usable training records")
        self._entries = _PackedList(entries)
        self._lengths = lengths
        logger.info("%s: %d training samples", self.path, len(entries))

    def _check_options(self) -> None:
        reserved = {"num_frames", "sample", "seed"} & set(self.video_kwargs)
        if reserved:
            raise ConfigError(f"video_kwargs: pass {', '.join(sorted(reserved))} as LlavaDataset arguments")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ConfigError(f"max_length must be an integer >= 1 or None, got {self.max_length!r}")
        # fail now, in the main process, on bad sampling / size / timeout options (not once per worker item);
        # time bounds depend on the clip, so they are left to each sample
        load_video(np.zeros((1, 2, 2, 3), np.uint8), num_frames=self.num_frames, sample=self.sample, seed=0,
                   **{k: v for k, v in self.video_kwargs.items() if k not in ("backend", "start", "end")})

    def _exclude(self, line: int, rid: str | None, kind: str, reason: str) -> None:
        self.excluded[kind] += 1
        level = logging.WARNING if sum(self.excluded.values()) <= _MAX_WARNINGS else logging.DEBUG
        logger.log(level, "%s:%d (id %s): record left out: %s: %s", self.path, line, rid, kind, reason)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random frames :meth:`__getitem__` samples (call before iterating)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @property
    def lengths(self) -> list[int]:
        """Tokens per sample (text + ``num_visual_tokens`` per placeholder), exact, without decoding media."""
        return self._lengths

    @property
    def skipped(self) -> Counter[str]:
        """Samples that :meth:`__getitem__` returned as ``None``, by reason, over all processes."""
        totals = self._skip_counts.sum(0).tolist()  # [len(SKIP_REASONS)]
        return Counter({reason: n for reason, n in zip(SKIP_REASONS, totals) if n})

    def __len__(self) -> int:
        return len(self._entries)

    def record_line(self, index: int) -> int:
        """The file line where sample ``index``'s record starts."""
        return self._entries[index][0]

    def __getitem__(self, index: int) -> Sample | None:
        line, rid, messages, paths, kinds = self._entries[index]
        epoch = self.epoch
        media = []
        for k, (path, kind) in enumerate(zip(paths, kinds)):
            try:
                if kind == "image":
                    opts = {key: v for key, v in self.video_kwargs.items() if key in _LOAD_ONLY_KWARGS}
                    image = load_video(path, num_frames=1, sample="uniform", **opts).frames[0]  # [H, W, 3]
                    media.append(self.processor.preprocess_media([image], kinds=["image"])["pixel_values"]
                                 if self.cache_frames else image)  # [1, 3, H, W] or [H, W, 3]
                elif self.cache_frames:
                    media.append(cached_pixels(path, self.num_frames, self.sample, self.processor, self.video_kwargs,
                                               processor_key=self._processor_key))  # [T, 3, H, W]
                else:
                    media.append(load_video(path, num_frames=self.num_frames, sample=self.sample,
                                            seed=item_seed(self.seed, epoch, index, k), **self.video_kwargs).frames)
            except MediaNotFoundError as err:
                return self._skip(index, line, rid, "missing", str(err))
            except (MediaError, OSError) as err:
                return self._skip(index, line, rid, "decode", str(err))
        if self.cache_frames:  # media are preprocessed already: tokenize the text alone
            inputs = self.processor(messages, add_generation_prompt=False, return_labels=True,
                                    padding_side="right", text_only=True)
            pixel_values = torch.cat(media) if media else None  # [N, 3, H, W]
            frame_counts = [m.shape[0] for m in media]
        else:
            inputs = self.processor(messages, media, add_generation_prompt=False, return_labels=True,
                                    padding_side="right")
            pixel_values = inputs["pixel_values"] if media else None  # [N, 3, H, W]
            frame_counts = inputs["frame_counts"].tolist() if media else []
        input_ids = inputs["input_ids"][0]  # [L]
        if self.max_length is not None and input_ids.numel() > self.max_length:
            return self._skip(index, line, rid, "too_long", f"{input_ids.numel()} tokens > {self.max_length}")
        weights = inputs.get("loss_weights")
        return Sample(index=index, input_ids=input_ids, labels=inputs["labels"][0], pixel_values=pixel_values,
                      frame_counts=frame_counts, loss_weights=None if weights is None else weights[0])

    def _skip(self, index: int, line: int, rid: str | None, reason: str, message: str) -> None:
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % _MAX_WORKERS  # each process writes its own row: no races
        self._skip_counts[row, SKIP_REASONS.index(reason)] += 1
        self._warned += 1
        level = logging.WARNING if self._warned <= _MAX_WARNINGS else logging.DEBUG
        logger.log(level, "%s:%d (id %s, index %d): sample skipped: %s: %s", self.path, line, rid, index, reason,
                   message)


def collate(samples: list[Sample | None], pad_token_id: int) -> dict[str, Any]:
    """Right-pad samples into a batch; ``None`` entries (skipped samples) are dropped.

    Returns:
        ``input_ids [B, S]``, ``attention_mask [B, S]``, ``labels [B, S]`` (IGNORE_INDEX on padding),
        ``loss_weights [B, S]`` (float, 0 where the label is IGNORE_INDEX; ``None`` when no sample has
        weighted turns, which means weight 1 on every labelled token),
        ``pixel_values [N, 3, H, W]`` (all frames, in sample order) and ``frame_counts [M]`` or ``None``
        when no sample has media, ``indices`` (dataset indices kept), ``num_samples`` (B) and
        ``num_skipped``. When every sample was skipped B is 0 and the tensors are ``None``.
        Use ``functools.partial(collate, pad_token_id=...)`` as a DataLoader ``collate_fn``.
    """
    kept = [s for s in samples if s is not None]
    batch: dict[str, Any] = {"num_samples": len(kept), "num_skipped": len(samples) - len(kept),
                             "indices": [s.index for s in kept]}
    if not kept:
        batch.update(input_ids=None, attention_mask=None, labels=None, loss_weights=None, pixel_values=None,
                     frame_counts=None)
        return batch
    length = max(s.input_ids.numel() for s in kept)
    input_ids = torch.full((len(kept), length), pad_token_id, dtype=torch.long)  # [B, S]
    labels = torch.full((len(kept), length), IGNORE_INDEX, dtype=torch.long)  # [B, S]
    attention_mask = torch.zeros((len(kept), length), dtype=torch.long)  # [B, S]
    for b, s in enumerate(kept):
        n = s.input_ids.numel()
        input_ids[b, :n], labels[b, :n], attention_mask[b, :n] = s.input_ids, s.labels, 1
    loss_weights = None
    if any(s.loss_weights is not None for s in kept):
        loss_weights = (labels != IGNORE_INDEX).float()  # [B, S]: weight 1 on the labelled tokens of the others
        for b, s in enumerate(kept):
            if s.loss_weights is not None:
                loss_weights[b, :s.loss_weights.numel()] = s.loss_weights
    pixels = [s.pixel_values for s in kept if s.pixel_values is not None]
    counts = [c for s in kept for c in s.frame_counts]
    batch.update(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, loss_weights=loss_weights,
        pixel_values=torch.cat(pixels) if pixels else None,  # [N, 3, H, W]
        frame_counts=torch.tensor(counts, dtype=torch.long) if counts else None,  # [M]
    )
    return batch


# ---------------------------------------------------------------------------------------------- sampler
_ORDER_KEYS = ("seed", "num_samples", "global_batch_size", "shuffle", "group_by_length", "drop_last",
               "mega_batches")


class ResumableBatchSampler(Sampler[list[int]]):
    """Micro-batches of dataset indices for one rank, the same global order on every rank, resumable.

    Each epoch, a permutation seeded by ``(seed, epoch)`` is cut into global batches of
    ``G = micro_batch_size * num_replicas * grad_accum`` indices (one optimizer step). With
    ``group_by_length``, the permutation is sorted by length (longest first) within mega-chunks of
    ``mega_batches`` global batches, so a global batch holds similar lengths, and the order of the
    global batches is then shuffled (same generator). Micro-step ``a`` of rank ``r`` in a global batch
    takes its indices ``[(a * num_replicas + r) * micro : ... + micro]``, so any split of the same
    ``G`` over processes and accumulation steps trains on the same samples per optimizer step.
    ``drop_last`` drops an incomplete last global batch; otherwise it is filled by repeating the
    permutation from its start.

    **Resume.** The sampler does not count what it yields: a DataLoader with workers draws
    ``num_workers * prefetch_factor`` batches ahead of the training loop. The trainer calls
    :meth:`advance` once per micro-batch it has trained on (a micro-batch whose samples were all
    skipped counts too), and :meth:`state_dict` returns ``{"epoch": e, "micro_step": k, ...}``: the
    first ``k`` micro-batches of this rank in epoch ``e`` are consumed. Saved right after an optimizer
    step, ``k`` is a multiple of ``grad_accum``; the value is the same on every rank. After
    :meth:`load_state_dict`, ``__iter__`` yields the micro-batches ``k, k + 1, ...`` of epoch ``e``.
    :meth:`set_epoch` with the loaded epoch keeps that position and with another epoch starts it at 0.
    A state saved at the end of an epoch (``k == len(self)``) resumes to an empty remainder of it.
    A state whose order settings (seed, dataset size, ``G``, shuffling, grouping) differ is refused;
    a different split of the same ``G`` (``micro_batch_size``, ``num_replicas``, ``grad_accum``) is
    converted when ``k`` is at an optimizer step boundary.
    """

    def __init__(self, lengths: Sequence[int], micro_batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                 grad_accum: int = 1, seed: int = 0, shuffle: bool = True, group_by_length: bool = True,
                 drop_last: bool = True, mega_batches: int = 50) -> None:
        for name, value in (("micro_batch_size", micro_batch_size), ("num_replicas", num_replicas),
                            ("grad_accum", grad_accum), ("mega_batches", mega_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(rank, int) and 0 <= rank < num_replicas):
            raise ConfigError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)  # [n]
        self.micro_batch_size, self.num_replicas, self.rank = micro_batch_size, num_replicas, rank
        self.grad_accum, self.seed, self.shuffle = grad_accum, seed, shuffle
        self.group_by_length, self.drop_last, self.mega_batches = group_by_length, drop_last, mega_batches
        self.global_batch_size = micro_batch_size * num_replicas * grad_accum
        n = len(self.lengths)
        if n == 0 or (drop_last and n < self.global_batch_size):
            raise ConfigError(
                f"{n} samples make no complete global batch of {self.global_batch_size} "
                f"(micro_batch_size {micro_batch_size} x num_replicas {num_replicas} x grad_accum {grad_accum}); "
                "use a smaller batch or drop_last=False"
            )
        self.epoch = 0
        self.consumed = 0  # micro-batches of self.epoch the trainer has consumed (see advance)

    @property
    def num_global_batches(self) -> int:
        """Optimizer steps per epoch."""
        n, g = len(self.lengths), self.global_batch_size
        return n // g if self.drop_last else math.ceil(n / g)

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank (the same on every rank)."""
        return self.num_global_batches * self.grad_accum

    def global_batches(self, epoch: int) -> np.ndarray:
        """The epoch's global batches, ``int64 [num_global_batches, G]``, identical on every rank."""
        n, g, num = len(self.lengths), self.global_batch_size, self.num_global_batches
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)  # [n]
        order = np.resize(order, num * g)  # [num * G]: drops the tail, or repeats from the start
        if self.group_by_length:
            chunk = self.mega_batches * g
            for s in range(0, len(order), chunk):
                part = order[s:s + chunk]
                order[s:s + chunk] = part[np.argsort(-self.lengths[part], kind="stable")]
        batches = order.reshape(num, g)  # [num, G]
        if self.shuffle and self.group_by_length:
            batches = batches[rng.permutation(num)]
        return batches

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """All of this rank's micro-batches of ``epoch``, in order."""
        m, r = self.micro_batch_size, self.num_replicas
        batches = self.global_batches(epoch).reshape(-1, self.grad_accum, r, m)  # [num, A, R, m]
        return batches[:, :, self.rank, :].reshape(-1, m).tolist()  # [num * A, m]

    def __iter__(self) -> Iterator[list[int]]:
        """This rank's micro-batches of the current epoch from the resume position on."""
        return iter(self.micro_batches(self.epoch)[self.consumed:])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a different one than the current starts at its first micro-batch."""
        if epoch != self.epoch:
            self.epoch, self.consumed = int(epoch), 0

    def advance(self, num_micro_batches: int = 1) -> None:
        """Record that the trainer has consumed ``num_micro_batches`` more micro-batches of this epoch."""
        if num_micro_batches < 0 or self.consumed + num_micro_batches > len(self):
            raise ValueError(f"cannot advance by {num_micro_batches}: {self.consumed} of {len(self)} micro-batches "
                             f"of epoch {self.epoch} are consumed")
        self.consumed += num_micro_batches

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "micro_step"}`` (consumed micro-batches of this rank) plus the order settings."""
        return {
            "epoch": self.epoch, "micro_step": self.consumed, "grad_accum": self.grad_accum,
            "num_replicas": self.num_replicas, "micro_batch_size": self.micro_batch_size, "seed": self.seed,
            "num_samples": len(self.lengths), "global_batch_size": self.global_batch_size, "shuffle": self.shuffle,
            "group_by_length": self.group_by_length, "drop_last": self.drop_last, "mega_batches": self.mega_batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``: the next ``__iter__`` of its epoch skips its consumed micro-batches.

        Raises:
            ConfigError: the saved order settings differ, or a changed split of ``G`` cannot be
                converted (state saved inside an accumulation cycle), or ``micro_step`` is out of range.
        """
        current = self.state_dict()
        changed = [f"{k} was {state[k]!r}, now {current[k]!r}" for k in _ORDER_KEYS
                   if k in state and state[k] != current[k]]
        if changed:
            raise ConfigError(f"cannot resume the data order exactly: {'; '.join(changed)}")
        epoch, step = int(state["epoch"]), int(state["micro_step"])
        old_accum = int(state.get("grad_accum", self.grad_accum))
        if (old_accum, state.get("num_replicas", self.num_replicas)) != (self.grad_accum, self.num_replicas):
            if step % old_accum:
                raise ConfigError(f"micro_step {step} is inside an accumulation cycle of {old_accum}; cannot "
                                  "convert it to a new num_replicas / grad_accum split")
            step = step // old_accum * self.grad_accum
        if not 0 <= step <= len(self):
            raise ConfigError(f"micro_step {step} is outside epoch {epoch} ({len(self)} micro-batches)")
        self.epoch, self.consumed = epoch, step


# ---------------------------------------------------------------------------------------------- checking
@dataclass
class DataCheckReport:
    """What :func:`run_data_check` found: records read (malformed ones included) and the problems."""

    path: Path
    num_records: int
    problems: list[Problem]

    def counts(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)


def check_dataset(path: str | Path, processor: VideoCCAMProcessor | None, *, media_root: str | Path | None = None,
                  max_length: int | None = None, num_frames: int = 16, decode: bool = True) -> list[Problem]:
    """Every problem of a training file, in line order (see :func:`run_data_check`)."""
    return run_data_check(path, processor, media_root=media_root, max_length=max_length, num_frames=num_frames,
                          decode=decode).problems


def run_data_check(path: str | Path, processor: VideoCCAMProcessor | None, *, media_root: str | Path | None = None,
                   max_length: int | None = None, num_frames: int = 16, decode: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> DataCheckReport:
    """Check a LLaVA JSON/JSONL training file record by record, going on after each problem.

    Kinds (:data:`PROBLEM_KINDS`): ``json`` (malformed line), ``schema``, ``placeholders``,
    ``empty`` (see :func:`record_to_conversation`), ``missing`` (media file not found), ``decode``
    (exists but does not decode; only with ``decode=True``, which decodes ``num_frames`` frames of
    every video and each image once), ``too_long`` (tokens incl. ``num_visual_tokens`` per
    placeholder > ``max_length``; needs ``processor``). ``processor`` may be ``None``: no token
    counts then. ``media_root`` defaults to the file's folder. ``progress(records checked, records)``
    is called before each record's media check and at the end (:mod:`videoccam.progress`).
    """
    path = Path(path)
    if max_length is not None and processor is None:
        raise ConfigError("max_length needs a processor (its tokenizer counts the tokens)")
    root = Path(media_root) if media_root is not None else path.parent
    tokens = (processor.image_token, processor.video_token) if processor is not None else (
        IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)
    problems: list[Problem] = []
    numbered = _read_numbered(path, problems)
    num_records = len(numbered) + sum(1 for p in problems if p.line > 0)
    checked: dict[tuple[str, str], tuple[str, str] | None] = {}
    parsed: list[tuple[int, str | None, _Parsed]] = []
    for index, (line, record) in enumerate(numbered):
        if progress is not None:
            progress(index, len(numbered))
        rid = _record_id(record)
        try:
            p = _parse_record(record, root, *tokens)
        except DataRecordError as err:
            problems.append(Problem(line, rid, err.kind, str(err)))
            continue
        for item, kind in zip(p.media, p.kinds):
            if (item, kind) not in checked:
                checked[item, kind] = _media_problem(item, kind, num_frames, decode)
            if checked[item, kind] is not None:
                problems.append(Problem(line, rid, *checked[item, kind]))
        parsed.append((line, rid, p))
    if progress is not None:
        progress(len(numbered), len(numbered))
    if processor is not None:
        counts = _token_lengths(processor, [p.messages for _, _, p in parsed], [len(p.media) for _, _, p in parsed])
        for (line, rid, _), n in zip(parsed, counts):
            if n is None:
                problems.append(Problem(line, rid, "placeholders",
                                        "the text holds placeholder tokens besides the media's"))
            elif max_length is not None and n > max_length:
                problems.append(Problem(line, rid, "too_long", f"{n} tokens > max_length {max_length}"))
    problems.sort(key=lambda p: p.line)
    return DataCheckReport(path, num_records, problems)


def _media_problem(path: str, kind: str, num_frames: int, decode: bool) -> tuple[str, str] | None:
    if not os.path.exists(path):
        return "missing", f"{kind} not found: {path}"
    if not decode:
        return None
    try:
        load_video(path, num_frames=1 if kind == "image" else num_frames, sample="uniform")
    except MediaNotFoundError as err:
        return "missing", str(err)
    except (MediaError, OSError) as err:
        return "decode", f"{kind} does not decode: {err}"
    return None
