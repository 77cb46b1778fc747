"""The mapper node's side of online prompt tuning: the tuner's versions go to the map (saved with it), to the
mapper's own network and, over ``online3r/prompts``, to the tracker; ``~/save_prompts`` / ``~/load_prompts``.

The tuner runs in its own thread (:class:`~online3r_ros.tuning.online.OnlineTuning`), so neither the mapper's
optimisation nor tracking waits for it; :meth:`MapperPrompts.deliver` hands finished versions over between
mapper steps. Prompts travel as bfloat16 and both halves use exactly the rounded values.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from std_msgs.msg import UInt8MultiArray
from std_srvs.srv import Trigger

from online3r_ros.ros import topics as T
from online3r_ros.ros.nodes.msgs import prompts_to_msg, round_prompts
from online3r_ros.slam.packets import PromptUpdate
from online3r_ros.tuning import OnlineTuning, PromptFileError, load_prompts, save_prompts

__all__ = ["MapperPrompts"]


class MapperPrompts:
    """Owns the mapper's prompt topic and services (see the module docstring)."""

    def __init__(
        self, node: Any, backend: Any, tuning: OnlineTuning | None, path: str, lock: threading.Lock
    ) -> None:
        self.node, self.backend, self.tuning, self.lock = node, backend, tuning, lock
        self.path = Path(path).expanduser()
        self.pub = node.create_publisher(UInt8MultiArray, T.PROMPTS.name, T.qos_for(T.PROMPTS))
        node.create_service(Trigger, "~/save_prompts", self._srv_save)
        node.create_service(Trigger, "~/load_prompts", self._srv_load)

    def deliver(self) -> None:
        """Use the tuner's finished versions (call between mapper steps, with the backend lock held)."""
        if self.tuning is not None:
            for update in self.tuning.updates():
                self.use(update)

    def use(self, update: PromptUpdate) -> None:
        """Make ``update`` (rounded as it travels) the map's, the mapper network's and the tracker's."""
        update = round_prompts(update)
        self.backend.prompts = update
        if self.backend.source.tunable:
            self.backend.source.set_prompts(update.prompts, update.version)
        self.pub.publish(prompts_to_msg(update))

    def after_map_load(self) -> None:
        """A loaded map's prompts: tune on from them and send them (backend lock held)."""
        if self.backend.prompts is None:
            return
        if self.tuning is not None:
            self.tuning.tuner.restart_from(self.backend.prompts)
        self.use(self.backend.prompts)

    def status(self) -> dict:
        """For the mapper status: tuning counters and the last update, or the version in use."""
        version = None if self.backend.prompts is None else self.backend.prompts.version
        return {"version": version, **({} if self.tuning is None else self.tuning.stats.as_dict())}

    def close(self) -> None:
        if self.tuning is not None:
            self.tuning.close()

    # ------------------------------------------------------------------------------------------ services
    def _srv_save(self, request: Any, response: Any) -> Any:
        with self.lock:
            update = self.backend.prompts
        if update is None:
            response.success, response.message = (
                False,
                "no tuned prompts yet (tuning off, or no keyframe tuned)",
            )
            return response
        try:
            save_prompts(self.path, update)
        except OSError as exc:
            response.success, response.message = False, f"cannot save {self.path}: {exc}"
            return response
        response.success, response.message = True, f"prompts version {update.version} saved to {self.path}"
        return response

    def _srv_load(self, request: Any, response: Any) -> Any:
        source = self.backend.source
        if not source.tunable:
            response.success, response.message = False, f"the {source.name} has no prompts (MASt3R only)"
            return response
        c = source.engine.model.cfg
        try:
            update = load_prompts(self.path, (c.enc_depth, c.enc_embed_dim))
        except PromptFileError as exc:
            response.success, response.message = False, str(exc)
            return response
        with self.lock:
            if self.tuning is not None:
                self.tuning.tuner.restart_from(update)
            self.use(update)
        response.success, response.message = True, f"prompts version {update.version} loaded from {self.path}"
        return response
