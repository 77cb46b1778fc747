"""Errors raised while reading and loading MASt3R checkpoints (see :mod:`online3r_ros.model.checkpoint`)."""

from __future__ import annotations

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointCorruptedError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "StateDictMismatchError",
]


class CheckpointError(Exception):
    """Base class of every checkpoint-loading error."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or a directory lacks the expected files."""


class CheckpointFormatError(CheckpointError, ValueError):
    """The file is not a supported checkpoint (not a torch/safetensors file, or not a MASt3R dict layout)."""


class CheckpointCorruptedError(CheckpointError, ValueError):
    """The file is truncated or its bytes are damaged (bad zip/CRC, bad safetensors header, NaN weights)."""


class ArchitectureMismatchError(CheckpointError, ValueError):
    """The checkpoint holds a different network (DUSt3R, CroCo, other head/output) than MASt3R."""


class StateDictMismatchError(CheckpointError, ValueError):
    """Strict key check failed. Attributes list the missing, unexpected and shape-mismatched keys."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched

        def _fmt(items: list[str], n: int = 12) -> str:
            more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
            return ", ".join(items[:n]) + more

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_fmt(unexpected)}")
        if mismatched:
            shapes = [f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in mismatched]
            parts.append(f"{len(mismatched)} shape mismatch(es): {_fmt(shapes)}")
        super().__init__("state_dict does not match the model; " + "; ".join(parts))
