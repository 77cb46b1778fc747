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
from dataclasses import dataclass

from .packets import MapperState

__all__ = ["LinkAction", "LinkStep", "MapperLink"]


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
