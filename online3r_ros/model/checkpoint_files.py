"""Low-level checkpoint file readers that never execute pickled code (used by :mod:`.checkpoint`).

* :func:`_torch_load_restricted`: ``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed and
  any other global the pickle names replaced by an inert placeholder.
* :func:`_verify_zip`: CRC check of a ``torch.save`` zip before loading it.
* :func:`_read_safetensors`: header/length checks, then ``safetensors.torch.load_file``.
* :func:`_file_kind`: ``'zip'``, ``'safetensors'`` or ``'legacy'`` from the first bytes.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from .checkpoint_errors import CheckpointCorruptedError, CheckpointFormatError


class _Inert:
    """Stand-in for a non-allow-listed global in a pickle: swallows construction and state, runs nothing."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self._qualname}>"


def _inert_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (_Inert,), {"_qualname": qualname})


def _verify_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if not any(n.endswith("data.pkl") for n in names):
                raise CheckpointFormatError(f"{path}: a zip archive but not a torch.save file (no data.pkl)")
            bad = zf.testzip()  # reads every member and checks its CRC-32
    except zipfile.BadZipFile as exc:
        raise CheckpointCorruptedError(f"{path}: truncated or corrupted zip archive ({exc})") from None
    except (OSError, EOFError, zipfile.LargeZipFile) as exc:
        raise CheckpointCorruptedError(f"{path}: cannot read the zip archive ({exc})") from None
    if bad is not None:
        raise CheckpointCorruptedError(f"{path}: corrupted data, CRC-32 mismatch in member {bad!r}")


def _torch_load_restricted(path: Path, mmap: bool) -> Any:
    """``torch.load(weights_only=True)`` with ``argparse.Namespace`` allowed and every other global the
    pickle names replaced by an inert placeholder (found up front for zip files, one refusal at a time for
    legacy files). Modules torch blocks outright (``os``, ``posix``, ...) stay refused."""
    try:
        unknown = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) format: unknown globals are reported by torch.load itself
        unknown = set()
    for _ in range(64):
        allowed: list[Any] = [argparse.Namespace]
        allowed += [(_inert_class(g), g) for g in sorted(unknown) if g != "argparse.Namespace"]
        with torch.serialization.safe_globals(allowed):
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
            except pickle.UnpicklingError as exc:
                msg = str(exc)
                m = re.search(r"GLOBAL ([\w.]+)", msg)
                if m and m.group(1) not in unknown:
                    unknown.add(m.group(1))
                    continue
                lines = [ln.strip() for ln in msg.splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
                why = lines[0] if lines else msg.splitlines()[0]
                raise CheckpointFormatError(
                    f"{path}: the pickle needs objects other than tensors and plain values, refused ({why})"
                ) from None
            except (RuntimeError, EOFError, OSError, KeyError, ValueError, UnicodeDecodeError) as exc:
                raise CheckpointCorruptedError(
                    f"{path}: truncated or corrupted torch checkpoint ({exc})"
                ) from None
    raise CheckpointFormatError(f"{path}: the pickle references too many non-tensor globals")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointCorruptedError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointCorruptedError(f"{path}: truncated or corrupted safetensors header (length {n})")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CheckpointCorruptedError(f"{path}: corrupted safetensors header ({exc})") from None
    if max(ends, default=0) > size - 8 - n:
        raise CheckpointCorruptedError(
            f"{path}: truncated safetensors file ({size} bytes, header needs {8 + n + max(ends)})"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointCorruptedError(f"{path}: corrupted safetensors file ({exc})") from None


def _file_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointCorruptedError(f"{path}: empty file")
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < path.stat().st_size and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":
        return "legacy"
    raise CheckpointFormatError(
        f"{path}: not a PyTorch checkpoint or safetensors file (starts with {head[:8]!r}); "
        "expected the official .pth or a Hugging Face folder (config.json + model.safetensors)"
    )
