"""Typed errors of the bag tools: every one carries a single-line message meant for the user.

:class:`BagError` is the base (a ``ValueError``); the subclasses tell a caller (or a CLI) what went wrong
without parsing text. No ROS dependency.
"""

from __future__ import annotations

__all__ = [
    "BagError",
    "BagNotFoundError",
    "CorruptBagError",
    "FrameSizeError",
    "NoImageTopicError",
    "NoTrajectoryError",
    "UnknownTopicError",
]


class BagError(ValueError):
    """A bag cannot be read or written as asked. ``str(err)`` is one line (newlines are folded)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class BagNotFoundError(BagError):
    """The bag path does not exist."""


class CorruptBagError(BagError):
    """The file exists but is not a readable bag (truncated, corrupt, unknown format)."""


class UnknownTopicError(BagError):
    """A topic named by the caller is not in the bag (the message lists what the bag holds)."""


class NoImageTopicError(BagError):
    """No usable colour image topic was found (the message lists what the bag holds)."""


class FrameSizeError(BagError):
    """Colour and depth of one frame have different sizes (or the CameraInfo disagrees with them)."""


class NoTrajectoryError(BagError):
    """No trajectory can be extracted (no pose topic, unknown frames, disconnected TF tree)."""
