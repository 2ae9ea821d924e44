"""The benchmarks ``videoccam eval`` knows, by name.

Each name maps to ``module:attribute`` under this package: an object that follows
:class:`videoccam.eval.types.Benchmark` (a module-level instance, so that one module can serve
several datasets, as ``openqa`` serves the four VideoChatGPT-style sets).
"""

from __future__ import annotations

import importlib

from videoccam.eval.types import Benchmark

# CLI name -> "module:attribute" under videoccam.eval.benchmarks
BENCHMARKS: dict[str, str] = {
    "mvbench": "mvbench:MVBENCH",
    "videomme": "videomme:VIDEOMME",
    "mlvu": "mlvu:MLVU",
    "videovista": "videovista:VIDEOVISTA",
    "msvd-qa": "openqa:MSVD_QA",
    "msrvtt-qa": "openqa:MSRVTT_QA",
    "tgif-qa": "openqa:TGIF_QA",
    "activitynet-qa": "openqa:ACTIVITYNET_QA",
    "synth": "synth:SYNTH",
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    module, attribute = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(f"videoccam.eval.benchmarks.{module}"), attribute)
