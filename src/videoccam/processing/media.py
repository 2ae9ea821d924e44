"""Media items as the processor takes them -> frames -> preprocessed pixels.

A *media item* is one image or one video: a PIL image or ``[H, W, 3]`` array (one frame), a list
of them, a ``[T, H, W, 3]`` array, a :class:`~videoccam.processing.video.Video`, or a path (image
file, video file, frame folder). :func:`load_media` turns one into its frames,
:func:`preprocess_frames` hands those to the image processor, and :func:`flatten_media` /
:func:`match_media` pair the ``images=`` / ``videos=`` arguments of the keyword convention with the
placeholders of the text. Frames are always channels-last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from videoccam.processing.video import Video, load_video
from videoccam.processing.video_images import IMAGE_SUFFIXES

STILL_IMAGE_SUFFIXES = IMAGE_SUFFIXES - {".gif"}  # a GIF may be animated: it gets a <video> placeholder

Frames = list  # a list of PIL images or uint8 [H, W, 3] arrays
MediaKind = Literal["image", "video"]


def media_kind(item: Any) -> MediaKind:
    """``"image"`` for one frame (a PIL image, an ``[H, W, 3]`` array, a still-image path), else
    ``"video"``."""
    single = isinstance(item, Image.Image) or (isinstance(item, np.ndarray) and item.ndim == 3) or (
        isinstance(item, (str, Path)) and Path(item).suffix.lower() in STILL_IMAGE_SUFFIXES
    )
    return "image" if single else "video"


def load_media(item: Any, num_frames: int, video_kwargs: dict[str, Any] | None = None) -> Frames:
    """One media item -> its frames (PIL images in RGB, or ``[H, W, 3]`` arrays).

    Args:
        item: see the module docstring; arrays must be channels-last (``[H, W, 3]`` / ``[T, H, W, 3]``).
        num_frames: frames sampled from a video file unless ``video_kwargs`` says otherwise.
        video_kwargs: :func:`~videoccam.processing.video.load_video` options for paths.

    Raises:
        ValueError: an unsupported type, an empty list, an array that is not channels-last RGB, or
            a URL (remote media are not fetched).
    """
    if isinstance(item, Image.Image):
        return [item.convert("RGB")]
    if isinstance(item, np.ndarray):
        if item.ndim == 3:
            return [_check_frame_array(item)]
        if item.ndim == 4:
            return list(_check_frame_array(item))
        raise ValueError(f"a media array must be [H, W, 3] or [T, H, W, 3], got shape {item.shape}")
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        raise ValueError(f"remote media are not fetched: download {item} and pass the local path")
    if isinstance(item, (str, Path)):
        return list(load_video(item, **{"num_frames": num_frames, **(video_kwargs or {})}).frames)
    if isinstance(item, Sequence) and not isinstance(item, str):
        if len(item) == 0:
            raise ValueError("a media item is an empty list of frames")
        return [f.convert("RGB") if isinstance(f, Image.Image) else _check_frame_array(f) for f in item]
    if isinstance(item, Video):
        return list(item.frames)
    raise ValueError(f"unsupported media item of type {type(item).__name__}")


def _check_frame_array(array: Any) -> Any:
    """``array`` itself if it is channels-last RGB (``[..., H, W, 3]``); ``ValueError`` otherwise, so a
    channels-first ``[3, H, W]`` frame is refused rather than read as a 3-pixel-high one."""
    if isinstance(array, np.ndarray) and array.shape[-1] != 3:
        raise ValueError(f"a frame array must be channels-last RGB, [H, W, 3], got shape {array.shape}")
    return array


def input_size(image_processor: Any) -> tuple[int, int] | None:
    """``(width, height)`` the image processor resizes every frame to, or None when it does not say
    (no resize, or a shortest-edge rule, which keeps the aspect ratio). Decoding at this size (the
    ``size=`` of :func:`~videoccam.processing.video.load_video`) never holds full-size frames and
    gives the pixels the processor would have made."""
    size = getattr(image_processor, "size", None)
    if size is None or not getattr(image_processor, "do_resize", True):
        return None
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    width, height = get("width"), get("height")
    return (int(width), int(height)) if width and height else None


def preprocess_frames(image_processor: Any, frames: Frames) -> torch.Tensor:
    """Frames -> ``[n, 3, H, W]`` pixel values, by the model's image processor.

    The frames are channels-last and the image processor is told so: left to guess, it takes a
    frame 1, 3 or 4 pixels high for channels-first and garbles it.
    """
    return image_processor(images=frames, return_tensors="pt",
                           input_data_format="channels_last")["pixel_values"]  # [n, 3, H, W]


# ------------------------------------------------ the keyword convention: images= / videos=
def is_frame(x: Any) -> bool:
    """One frame: a PIL image or an ``[H, W, 3]`` array."""
    return isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim == 3)


def is_image_item(x: Any) -> bool:
    """One image: a PIL image, an ``[H, W, 3]`` array or a path."""
    return is_frame(x) or isinstance(x, (str, Path))


def is_video_item(x: Any) -> bool:
    """One video: a non-empty list of frames, a ``[T, H, W, 3]`` array, a path or a ``Video``."""
    if isinstance(x, (Video, str, Path)) or (isinstance(x, np.ndarray) and x.ndim == 4):
        return True
    return isinstance(x, (list, tuple)) and bool(x) and all(is_frame(f) for f in x)


def flatten_media(media: Any, is_item: Callable[[Any], bool], name: str) -> list:
    """``images=`` / ``videos=`` as transformers processors take them (one item, a list, a list per
    prompt, or a stacked array) -> a flat list of items in order."""
    if media is None:
        return []
    if is_item(media):
        return [media]
    if isinstance(media, np.ndarray) and media.ndim in (4, 5):
        return list(media)  # images [N, H, W, 3] / videos [N, T, H, W, 3] -> N items
    if isinstance(media, (list, tuple)):
        return [item for part in media for item in flatten_media(part, is_item, name)]
    shape = f" of shape {media.shape}" if isinstance(media, np.ndarray) else ""
    raise ValueError(f"{name}: unsupported media item of type {type(media).__name__}{shape}")


def match_media(kinds: list[list[str]], images: list, videos: list, image_token: str,
                video_token: str) -> list[list]:
    """Per prompt, its media items in placeholder order.

    Args:
        kinds: per prompt, its placeholders (``image_token`` / ``video_token``) in reading order.
        images, videos: the flat lists of :func:`flatten_media`.

    Each ``image_token`` takes the next of ``images``, each ``video_token`` the next of ``videos``.

    Raises:
        ValueError: naming both counts, unless every item has a placeholder of its kind.
    """
    num_images = sum(k == image_token for prompt in kinds for k in prompt)
    num_videos = sum(k == video_token for prompt in kinds for k in prompt)
    if num_images != len(images) or num_videos != len(videos):
        raise ValueError(
            f"the text holds {num_images} {image_token} and {num_videos} {video_token} "
            f"placeholders but {len(images)} images and {len(videos)} videos were given; write one "
            "placeholder per media item where it belongs in the prompt"
        )
    queues = {image_token: iter(images), video_token: iter(videos)}
    return [[next(queues[k]) for k in prompt] for prompt in kinds]
