"""The frontend's side of the re-send protocol between the two halves of the pipeline (ROS-free).

The backend announces what it holds (:class:`~online3r_ros.slam.packets.MapperState`: a generation that
changes whenever its map is cleared or loaded, the session its map belongs to and how many keyframes it
has). :class:`MapperLink` turns each new announcement into what the frontend must do:

- ``RESET``: the backend's map was cleared on purpose (a reset request): start a new session;
- ``RESEND``: the backend lacks keyframes ``first .. stop-1`` of this session (a restarted backend, one
  that loaded an older map, a map of another session: then all of them, or one that asks again for a
  keyframe lost in transport): send them again;
- ``DEFER``: keyframes are missing but the backend cannot hear them yet (in ROS: no subscriber matched);
  the announcement is kept and handled again later;
- ``NONE``: nothing to do (an announcement already handled, or nothing missing).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Collection
from dataclasses import dataclass

from .packets import MapperState

__all__ = ["GapRequests", "LinkAction", "LinkStep", "MapperLink", "first_missing", "next_generation"]


class LinkAction(enum.Enum):
    NONE = "none"
    RESET = "reset"
    RESEND = "resend"
    DEFER = "defer"


@dataclass(frozen=True)
class LinkStep:
    """What to do about one announcement: ``action`` and, for ``RESEND``, the keyframes ``first..stop-1``."""

    action: LinkAction
    first: int = 0
    stop: int = 0


class MapperLink:
    """Follows the backend's announcements (see the module docstring)."""

    def __init__(self) -> None:
        self.generation: int | None = None  # generation of the last announcement handled
        self.request = 0  # and its request count

    def on_state(
        self, state: MapperState, session: int, num_keyframes: int, can_send: bool = True
    ) -> LinkStep:
        """The step for announcement ``state`` given the frontend's ``session`` and ``num_keyframes``;
        ``can_send``: the backend can receive keyframes now."""
        if (state.generation, state.request) == (self.generation, self.request):
            return LinkStep(LinkAction.NONE)
        first_seen = self.generation is None
        if state.reset and not first_seen:
            self.generation, self.request = state.generation, state.request
            return LinkStep(LinkAction.RESET)
        start = state.num_keyframes if state.session == session else 0
        if start < num_keyframes and not can_send:
            return LinkStep(LinkAction.DEFER)
        self.generation, self.request = state.generation, state.request
        if start < num_keyframes:
            return LinkStep(LinkAction.RESEND, start, num_keyframes)
        return LinkStep(LinkAction.NONE)


def next_generation(previous: int = 0) -> int:
    """A holder's new generation (``MapperState.generation``) after ``previous``: wall-clock nanoseconds, so
    distinct across restarts, and always greater than ``previous``."""
    return max(time.time_ns(), int(previous) + 1)


class GapRequests:
    """The holder's side: asks again for keyframes lost in transport. While some are missing (a later one
    arrived), a request is counted once they have been missing ``gap_s`` seconds, and again every ``gap_s``
    while they still are; ``requests`` goes into the holder's announcement (``MapperState.request``)."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = float(gap_s)
        self.requests = 0
        self._since: float | None = None

    def update(self, missing: bool, now: float | None = None) -> bool:
        """Whether to ask again now (then ``requests`` has grown by one); ``missing``: keyframes are lacking
        while later ones arrived."""
        if not missing:
            self._since = None
            return False
        t = time.monotonic() if now is None else now
        if self._since is None:
            self._since = t
        if t - self._since < self.gap_s:
            return False
        self._since = t
        self.requests += 1
        return True


def first_missing(ids: Collection[int]) -> int:
    """The smallest keyframe id (>= 0) not in ``ids``: how many keyframes a holder has without a gap.

    >>> first_missing({0, 1, 3})
    2
    """
    return next(i for i in range(len(ids) + 1) if i not in ids)
