"""Which torch device to run on: ``auto`` picks CUDA, then MPS, then CPU; a named one must exist."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """The devices torch can use here, best first: ``cuda:0``, ... , ``mps``, ``cpu``."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str | torch.device, what: str = "device") -> torch.device:
    """``auto`` is CUDA if available, then MPS, then CPU; a named device must exist.

    Args:
        name: ``auto`` or a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        what: how errors name the setting (the CLI passes ``--device``).

    Raises:
        ValueError: naming the device and the available ones (an unknown name, a device type this
            machine or torch build lacks, or a device index past the count).
    """
    available = available_devices()
    if str(name) == "auto":
        return torch.device(available[0])
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{what} {name}: not a device name (available: {', '.join(available)})") from None
    if device.type == "cpu":
        return device
    present = [d for d in available if torch.device(d).type == device.type]
    if not present:
        raise ValueError(f"{what} {name}: no {device.type} device on this machine or in this torch build "
                         f"(available: {', '.join(available)})")
    if device.index is not None and str(device) not in present:
        raise ValueError(f"{what} {name}: no such {device.type} device (available: {', '.join(available)})")
    return device
