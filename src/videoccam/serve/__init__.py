"""``videoccam serve``: an OpenAI-compatible HTTP API with video (see docs/serving.md).

:mod:`~videoccam.serve.app` (routes), :mod:`~videoccam.serve.requests` (checking a request),
:mod:`~videoccam.serve.media` (media parts, safely), :mod:`~videoccam.serve.batcher` (dynamic batching
in the one model thread), :mod:`~videoccam.serve.errors` (OpenAI's error JSON). Needs the ``serve`` extra.
"""
