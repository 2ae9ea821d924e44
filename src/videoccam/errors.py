"""Error types raised by videoccam for bad input.

Every error names the file or field at fault. Where a standard exception type fits, the
videoccam type also subclasses it (``FileNotFoundError``, ``ValueError``, ``TimeoutError``), so
callers may catch either.
"""

from __future__ import annotations


class VideoCCAMError(Exception):
    """Base class of every error videoccam raises on purpose."""


class ConfigError(VideoCCAMError, ValueError):
    """A configuration value is missing, of the wrong type, or inconsistent (message names the key)."""


class ModelNotFoundError(VideoCCAMError, FileNotFoundError):
    """A model folder (e.g. the bundled default model) is missing or incomplete (message names the path)."""


class ModelFileError(VideoCCAMError, ValueError):
    """A model folder's file exists but cannot be read: empty, truncated or corrupt (message names the file)."""


class MediaError(VideoCCAMError):
    """Base class for problems with a video, image or subtitle input (message names the source)."""


class MediaNotFoundError(MediaError, FileNotFoundError):
    """The media path does not exist."""


class MediaDecodeError(MediaError, ValueError):
    """The file exists but cannot be decoded: empty, truncated, not media, or no decodable frames."""


class UnsupportedMediaError(MediaDecodeError):
    """The container or codec is not supported by the chosen backend."""


class DecodeTimeoutError(MediaError, TimeoutError):
    """Decoding did not finish within the timeout."""


class SamplingError(MediaError, ValueError):
    """Sampling arguments are invalid (``num_frames < 1``, ``start >= end``, ...)."""


class PromptTooLongError(VideoCCAMError, ValueError):
    """A prompt has more tokens than the LLM has positions (``text_config.max_position_embeddings``)."""
