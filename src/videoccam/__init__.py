"""videoccam: Video-CCAM and TC-LLaVA temporal options on Hugging Face backbones."""

from videoccam.errors import (
    ConfigError,
    DecodeTimeoutError,
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    SamplingError,
    UnsupportedMediaError,
    VideoCCAMError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DecodeTimeoutError",
    "MediaDecodeError",
    "MediaError",
    "MediaNotFoundError",
    "SamplingError",
    "UnsupportedMediaError",
    "VideoCCAMError",
    "__version__",
]
