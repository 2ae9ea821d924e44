"""Training samples and batches: a LLaVA file -> tokenized samples with their frames -> padded batches.

    dataset = LlavaDataset("train.jsonl", processor, num_frames=16, max_length=4096)
    loader = DataLoader(dataset, batch_sampler=ResumableBatchSampler(dataset.lengths, ...),
                        collate_fn=functools.partial(collate, pad_token_id=processor.tokenizer.pad_token_id))

See ``docs/training-data.md`` for the data format, labels, turn weights and frame sampling.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from videoccam.constants import DEFAULT_NUM_FRAMES
from videoccam.data.frame_cache import FrameCache
from videoccam.data.llava import Conversation, parse_record
from videoccam.data.records import DataRecordError, read_numbered, record_id
from videoccam.errors import ConfigError, MediaError, MediaNotFoundError
from videoccam.processing.processor import IGNORE_INDEX, VideoCCAMProcessor
from videoccam.processing.video import check_media_path, load_video

__all__ = ["SKIP_REASONS", "Batch", "LlavaDataset", "Sample", "collate", "item_seed"]

logger = logging.getLogger(__name__)

SKIP_REASONS = ("missing", "decode", "too_long")  # why a sample failed to load (LlavaDataset.skipped)
_LOAD_ONLY_KWARGS = ("size", "timeout", "backend", "frame_folder_fps")  # the video_kwargs that images use too
_MAX_WARNINGS = 20  # per process and kind of event; further ones are logged at DEBUG
_MAX_WORKERS = 64  # rows of the shared skip counters (main process + DataLoader workers)


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
class Batch:
    """Samples right-padded to the longest (:func:`collate`). B samples, S tokens, N frames, M media items.

    When every sample of the micro-batch was skipped, B is 0 and the tensors are ``None``.
    """

    input_ids: torch.Tensor | None  # [B, S] long, pad_token_id after each sample's tokens
    attention_mask: torch.Tensor | None  # [B, S] long, 1 on real tokens
    labels: torch.Tensor | None  # [B, S] long, IGNORE_INDEX outside the answers and on padding
    loss_weights: torch.Tensor | None  # [B, S] float, 0 where labels are IGNORE_INDEX; None: 1 on every label
    pixel_values: torch.Tensor | None  # [N, 3, H, W], every frame in sample order; None: no media
    frame_counts: torch.Tensor | None  # [M] long, frames per media item; None: no media
    indices: list[int]  # [B] dataset indices of the samples kept
    num_samples: int  # B
    num_skipped: int  # samples of the micro-batch that failed to load

    @property
    def empty(self) -> bool:
        """Every sample was skipped: nothing to train on."""
        return self.input_ids is None

    def weights(self, turn_weights: bool = True) -> torch.Tensor:
        """Per-token loss weights ``[B, S]`` (float): the data's turn weights (``turn_weights``, where a
        sample has any), else 1 on every labelled token; 0 on unlabelled ones."""
        if turn_weights and self.loss_weights is not None:
            return self.loss_weights
        return (self.labels != IGNORE_INDEX).float()  # [B, S]

    def model_inputs(self) -> dict[str, torch.Tensor | None]:
        """The model's forward arguments: ``input_ids``, ``attention_mask``, ``pixel_values``, ``frame_counts``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "pixel_values": self.pixel_values, "frame_counts": self.frame_counts}

    def to(self, device: torch.device | str) -> Batch:
        """The batch with its tensors on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


def _input_size(processor: VideoCCAMProcessor) -> tuple[int, int]:
    """(height, width) the image processor produces (its crop size, else its size), 224 x 224 when unknown."""
    image_processor = getattr(processor, "image_processor", None)
    for name in ("crop_size", "size"):
        size = getattr(image_processor, name, None)
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return int(size["height"]), int(size["width"])
            if "shortest_edge" in size:
                return int(size["shortest_edge"]), int(size["shortest_edge"])
        elif isinstance(size, int):
            return size, size
    return 224, 224


def collate(samples: list[Sample | None], pad_token_id: int) -> Batch:
    """Right-pad samples into a :class:`Batch`; ``None`` entries (skipped samples) are dropped.

    ``loss_weights`` is ``None`` when no sample has weighted turns (weight 1 on every labelled token);
    otherwise samples without weights get 1 on their labelled tokens. ``pixel_values`` holds all frames
    in sample order. Use ``functools.partial(collate, pad_token_id=...)`` as a DataLoader ``collate_fn``.
    """
    kept = [s for s in samples if s is not None]
    common = {"indices": [s.index for s in kept], "num_samples": len(kept), "num_skipped": len(samples) - len(kept)}
    if not kept:
        return Batch(input_ids=None, attention_mask=None, labels=None, loss_weights=None, pixel_values=None,
                     frame_counts=None, **common)
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
    return Batch(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, loss_weights=loss_weights,
        pixel_values=torch.cat(pixels) if pixels else None,  # [N, 3, H, W]
        frame_counts=torch.tensor(counts, dtype=torch.long) if counts else None,  # [M]
        **common,
    )


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
        frame_cache: a :class:`FrameCache` the videos' processed frames are read from (decoded and
            resized on first use, or ahead by :meth:`FrameCache.warm_pixels`), for datasets trained
            several epochs with deterministic sampling; each sample then only rescales and normalises
            them, giving the processor's pixels bit for bit. Several datasets may share one.

    The epoch and the skip counters live in shared memory, so :meth:`set_epoch` in the main process
    reaches DataLoader workers, persistent ones included, and :attr:`skipped` sums all workers.
    """

    def __init__(self, path: str | Path, processor: VideoCCAMProcessor, *, media_root: str | Path | None = None,
                 num_frames: int = DEFAULT_NUM_FRAMES, sample: str = "random", max_length: int | None = None,
                 seed: int = 0, video_kwargs: dict[str, Any] | None = None,
                 frame_cache: FrameCache | None = None) -> None:
        if frame_cache is not None and sample == "random":
            raise ConfigError("a frame cache needs deterministic frames: sample='uniform' (or 'fps'/'mvbench'), "
                              "not 'random'")
        self.frame_cache = frame_cache
        # the image processor's settings, part of every cached clip's key: serialised once, not per sample
        self._processor_key = processor.image_processor.to_json_string() if frame_cache is not None else None
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
        entries, self._lengths = self._read_entries()
        self._entries = _PackedList(entries)
        logger.info("%s: %d training samples", self.path, len(entries))

    def _read_entries(self) -> tuple[list[tuple], list[int]]:
        """Parse and measure every record: ``(line, id, messages, media, kinds)`` and the token count of
        each usable one; the others are left out (:attr:`excluded`)."""
        processor = self.processor
        parsed: list[tuple[int, str | None, Conversation]] = []
        for line, record in read_numbered(self.path):
            rid = record_id(record)
            try:
                parsed.append((line, rid, parse_record(
                    record, self.media_root, processor.image_token, processor.video_token)))
            except DataRecordError as err:
                self._exclude(line, rid, err.kind, str(err))
        counts = processor.count_tokens([p.messages for _, _, p in parsed], [len(p.media) for _, _, p in parsed])
        entries, lengths = [], []
        for (line, rid, p), n in zip(parsed, counts, strict=True):
            if n is None:
                self._exclude(line, rid, "placeholders", "the text holds placeholder tokens besides the media's")
            elif self.max_length is not None and n > self.max_length:
                self._exclude(line, rid, "too_long", f"{n} tokens > max_length {self.max_length}")
            else:
                entries.append((line, rid, p.messages, p.media, p.kinds))
                lengths.append(n)
        if self.excluded:
            logger.warning("%s: left out %d record(s): %s", self.path, sum(self.excluded.values()),
                           ", ".join(f"{k} {v}" for k, v in sorted(self.excluded.items())))
        if not entries:
            raise ConfigError(f"{self.path}: no usable training records")
        return entries, lengths

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
        return Counter({reason: n for reason, n in zip(SKIP_REASONS, totals, strict=True) if n})

    def __len__(self) -> int:
        return len(self._entries)

    def record_line(self, index: int) -> int:
        """The file line where sample ``index``'s record starts."""
        return self._entries[index][0]

    def __getitem__(self, index: int) -> Sample | None:
        line, rid, messages, paths, kinds = self._entries[index]
        epoch = self.epoch
        try:
            media = [self._load(path, kind, (self.seed, epoch, index, k)) for k, (path, kind)
                     in enumerate(zip(paths, kinds, strict=True))]
        except MediaNotFoundError as err:
            return self._skip(index, line, rid, "missing", str(err))
        except (MediaError, OSError) as err:
            return self._skip(index, line, rid, "decode", str(err))
        if self.frame_cache is not None:  # media are preprocessed already: tokenize the text alone
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

    def dummy_sample(self) -> Sample:
        """A stand-in for a micro-batch whose samples were all skipped, trained with loss x 0: a short text
        and one black image at the image processor's input size, so that every trainable parameter (vision
        and projector included) gets a zero gradient and every rank joins the same DDP/FSDP collectives.
        It depends on nothing the run has seen, so a resume from any checkpoint is exact."""
        processor = self.processor
        record = {"image": "dummy.png", "conversations": [{"from": "human", "value": "<image>\n."},
                                                          {"from": "gpt", "value": "."}]}
        messages = parse_record(record, None, processor.image_token, processor.video_token).messages
        height, width = _input_size(processor)
        image = np.zeros((height, width, 3), dtype=np.uint8)  # [H, W, 3]
        inputs = processor(messages, [image], add_generation_prompt=False, return_labels=True, padding_side="right")
        return Sample(index=-1, input_ids=inputs["input_ids"][0], labels=inputs["labels"][0],
                      pixel_values=inputs["pixel_values"], frame_counts=inputs["frame_counts"].tolist())

    def _load(self, path: str, kind: str, seed_key: tuple[int, int, int, int]) -> np.ndarray | torch.Tensor:
        """One media item: its frames (uint8 ``[T, H, W, 3]``, an image ``[H, W, 3]``), random ones drawn
        with ``item_seed(*seed_key)``, or, with a frame cache, its processed pixels ``[T, 3, H, W]``."""
        cache = self.frame_cache
        if kind == "image" or cache is None:  # a cached clip is served without touching its file
            check_media_path(path)  # a FIFO or device is a bad sample at once, not a decode timeout
        if kind == "image":
            opts = {key: v for key, v in self.video_kwargs.items() if key in _LOAD_ONLY_KWARGS}
            image = load_video(path, num_frames=1, sample="uniform", **opts).frames[0]  # [H, W, 3]
            if cache is None:
                return image
            return self.processor.preprocess_media([image], kinds=["image"])["pixel_values"]  # [1, 3, H, W]
        if cache is not None:
            return cache.pixels(path, self.num_frames, self.sample, self.processor, self.video_kwargs,
                                processor_key=self._processor_key)  # [T, 3, H, W]
        return load_video(path, num_frames=self.num_frames, sample=self.sample, seed=item_seed(*seed_key),
                          **self.video_kwargs).frames

    def _skip(self, index: int, line: int, rid: str | None, reason: str, message: str) -> None:
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % _MAX_WORKERS  # each process writes its own row: no races
        self._skip_counts[row, SKIP_REASONS.index(reason)] += 1
        self._warned += 1
        level = logging.WARNING if self._warned <= _MAX_WARNINGS else logging.DEBUG
        logger.log(level, "%s:%d (id %s, index %d): sample skipped: %s: %s", self.path, line, rid, index, reason,
                   message)
