"""Issue 31: a failed write names the file (a full disk as ENOSPC) and leaves no half-written folder;
check_media_path refuses a FIFO at once but lets a symlink to a regular file through."""

from __future__ import annotations

import errno
import os

import pytest
from safetensors import SafetensorError

from videoccam.errors import MediaDecodeError, MediaNotFoundError
from videoccam.processing.video import check_media_path
from videoccam.train.checkpoint import writing


def test_a_full_disk_in_safetensors_becomes_enospc_naming_the_file_and_cleans_up(tmp_path):
    tmp = tmp_path / ".tmp-step-00000001"
    tmp.mkdir()
    (tmp / "half").write_bytes(b"x")
    with pytest.raises(OSError) as info, writing(tmp / "trainable.safetensors", cleanup=tmp):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp / "trainable.safetensors")
    assert os.strerror(errno.ENOSPC) in str(info.value) and not tmp.exists()


def test_other_write_errors_keep_their_errno_and_name_the_file(tmp_path):
    with pytest.raises(OSError) as info, writing(tmp_path / "a.pt"):
        raise OSError(errno.EACCES, "Permission denied")
    assert info.value.errno == errno.EACCES and str(tmp_path / "a.pt") in str(info.value)
    with pytest.raises(RuntimeError, match="a bug"), writing(tmp_path / "a.pt"):
        raise RuntimeError("a bug")


def test_check_media_path(tmp_path):
    real = tmp_path / "a.png"
    real.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(real)
    check_media_path(tmp_path / "link.png")
    check_media_path(tmp_path)
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(MediaDecodeError, match="pipe.mp4: not a regular file"):
        check_media_path(tmp_path / "pipe.mp4")
    with pytest.raises(MediaNotFoundError):
        check_media_path(tmp_path / "missing.png")
