"""Training data: LLaVA-format records -> tokenized samples -> padded batches, in an exactly resumable order.

    from videoccam.data import FrameCache, LlavaDataset, ResumableBatchSampler, collate

    dataset = LlavaDataset("train.jsonl", processor, num_frames=16, max_length=4096)
    sampler = ResumableBatchSampler(dataset.lengths, micro_batch_size=2, num_replicas=world, rank=rank,
                                    grad_accum=4, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=4,
                        collate_fn=functools.partial(collate, pad_token_id=processor.tokenizer.pad_token_id))

The modules, one concern each:

* :mod:`~videoccam.data.records`: JSON / JSONL files -> records with their line numbers.
* :mod:`~videoccam.data.llava`: the LLaVA schema: a record -> chat messages and media paths.
* :mod:`~videoccam.data.dataset`: :class:`LlavaDataset` (samples) and :func:`collate` (a :class:`Batch`).
* :mod:`~videoccam.data.sampler`: :class:`ResumableBatchSampler`, the order of the samples.
* :mod:`~videoccam.data.frame_cache`: :class:`FrameCache`, clips decoded once.
* :mod:`~videoccam.data.check`: ``videoccam data check``.

See ``docs/training-data.md`` for the data format.
"""

from videoccam.data.check import DataCheckReport, check_dataset, run_data_check
from videoccam.data.dataset import SKIP_REASONS, Batch, LlavaDataset, Sample, collate, item_seed
from videoccam.data.frame_cache import FrameCache
from videoccam.data.llava import ROLES, Conversation, parse_record, record_to_conversation
from videoccam.data.records import PROBLEM_KINDS, DataRecordError, Problem, read_records
from videoccam.data.sampler import ResumableBatchSampler

__all__ = [
    "PROBLEM_KINDS", "ROLES", "SKIP_REASONS", "Batch", "Conversation", "DataCheckReport", "DataRecordError",
    "FrameCache", "LlavaDataset", "Problem", "ResumableBatchSampler", "Sample", "check_dataset", "collate",
    "item_seed", "parse_record", "read_records", "record_to_conversation", "run_data_check",
]
