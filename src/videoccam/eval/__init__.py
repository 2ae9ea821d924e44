"""Evaluation on the papers' benchmarks: ``videoccam eval`` (see docs/evaluation.md).

:mod:`videoccam.eval.types` holds what a benchmark hands the loop (:class:`EvalItem`);
:mod:`videoccam.eval.benchmarks` the readers and official scorers, one module per benchmark;
:mod:`videoccam.eval.scoring` the shared letter check and proportions; :mod:`videoccam.eval.runner`
the loop (decode ahead, encode once per video, batched generation, resumable predictions).
"""

from videoccam.eval.types import EvalItem, LoadedBenchmark

__all__ = ["EvalItem", "LoadedBenchmark"]
