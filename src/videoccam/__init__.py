"""videoccam: Video-CCAM and TC-LLaVA temporal options on Hugging Face backbones."""

from videoccam.errors import (
    ConfigError,
    DecodeTimeoutError,
    MediaDecodeError,
    MediaError,
    MediaNotFoundError,
    ModelNotFoundError,
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
    "ModelNotFoundError",
    "SamplingError",
    "UnsupportedMediaError",
    "VideoCCAMError",
    "__version__",
]

# Importing registers the model type with the transformers Auto classes (no trust_remote_code).
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from videoccam.configuration import CCAMProjectorConfig, VideoCCAMConfig  # noqa: E402
from videoccam.modeling import VideoCCAMForConditionalGeneration  # noqa: E402
from videoccam.pipeline import Pipeline  # noqa: E402
from videoccam.processing.processor import VideoCCAMProcessor  # noqa: E402
from videoccam.processing.subtitles import load_subtitles  # noqa: E402
from videoccam.processing.video import Video, load_video, sample_indices  # noqa: E402
from videoccam.projector import CCAMProjector  # noqa: E402

AutoConfig.register("videoccam", VideoCCAMConfig, exist_ok=True)
AutoConfig.register("ccam_projector", CCAMProjectorConfig, exist_ok=True)
AutoModel.register(VideoCCAMConfig, VideoCCAMForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(VideoCCAMConfig, VideoCCAMForConditionalGeneration, exist_ok=True)
AutoProcessor.register(VideoCCAMConfig, VideoCCAMProcessor, exist_ok=True)

__all__ += [
    "CCAMProjector",
    "Pipeline",
    "CCAMProjectorConfig",
    "VideoCCAMConfig",
    "VideoCCAMForConditionalGeneration",
    "VideoCCAMProcessor",
    "Video",
    "load_subtitles",
    "load_video",
    "sample_indices",
]
