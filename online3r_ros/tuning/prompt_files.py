"""Prompt files: the tuned prompts of a place, to warm-start a robot that comes back (``--prompts FILE``,
the nodes' ``save_prompts`` / ``load_prompts``). A map file carries its prompts too.

Format: a ``torch.save`` dict ``{"format": "online3r_ros.prompts", "version": 1, "prompt_version": int,
"prompts": float32 tensor [enc_depth, T, Denc]}``, read with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..slam.packets import PromptUpdate
from ..utils.atomic import save_atomic

__all__ = ["PROMPTS_FORMAT", "PromptFileError", "save_prompts", "load_prompts"]

PROMPTS_FORMAT = "online3r_ros.prompts"
_VERSION = 1


class PromptFileError(ValueError):
    """A prompt file that cannot be used (missing, unreadable, not prompts, wrong shape)."""


def save_prompts(path: str | os.PathLike, update: PromptUpdate) -> Path:
    """Write ``update`` atomically to ``path``; returns the path."""
    state = {
        "format": PROMPTS_FORMAT,
        "version": _VERSION,
        "prompt_version": int(update.version),
        "prompts": update.prompts.detach().to("cpu", torch.float32).contiguous(),
    }
    return save_atomic(state, path)


def load_prompts(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> PromptUpdate:
    """Read a prompt file; ``shape`` = ``(enc_depth, Denc)`` of the network that will use them (checked).
    Raises :class:`PromptFileError` with one line saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompt file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one error line
        raise PromptFileError(f"prompt file {path} is unreadable: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != PROMPTS_FORMAT:
        raise PromptFileError(f"{path} is not an online3r_ros prompt file")
    if state.get("version") != _VERSION:
        raise PromptFileError(f"{path}: unsupported prompt file version {state.get('version')!r}")
    prompts = state.get("prompts")
    if not torch.is_tensor(prompts) or prompts.ndim != 3 or not bool(torch.isfinite(prompts).all()):
        raise PromptFileError(f"{path}: the prompts must be a finite [layers, tokens, dim] tensor")
    if shape is not None and (prompts.shape[0], prompts.shape[2]) != tuple(shape):
        raise PromptFileError(
            f"{path}: prompts of shape {tuple(prompts.shape)} do not fit this network "
            f"([{shape[0]}, T, {shape[1]}])"
        )
    return PromptUpdate(int(state.get("prompt_version", 0)), prompts.float())
