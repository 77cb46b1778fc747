"""Online prompt tuning (Online3R), ROS-free: deep encoder prompts learned at every new keyframe.

- :mod:`.losses`: the local and global consistency losses (pure functions).
- :mod:`.tuner`: :class:`PromptTuner` (the prompts, AdamW, one step per keyframe), :class:`TuningJob`.
- :mod:`.online`: :class:`OnlineTuning`, the backend hook (in the caller's thread or its own),
  :func:`make_online_tuning`.
- :mod:`.prompt_files`: prompt files (``--prompts``, the nodes' save/load services).

Versions of the prompts travel as :class:`~online3r_ros.slam.packets.PromptUpdate`.
"""

from .losses import global_consistency_loss, local_consistency_loss, pointmap_l1, valid_pixels
from .online import OnlineTuning, TuningStats, make_online_tuning, tuning_job
from .prompt_files import PROMPTS_FORMAT, PromptFileError, load_prompts, save_prompts
from .tuner import PromptTuner, TuningJob, check_frozen

__all__ = [
    "PROMPTS_FORMAT",
    "OnlineTuning",
    "PromptFileError",
    "PromptTuner",
    "TuningJob",
    "TuningStats",
    "check_frozen",
    "global_consistency_loss",
    "load_prompts",
    "local_consistency_loss",
    "make_online_tuning",
    "pointmap_l1",
    "save_prompts",
    "tuning_job",
    "valid_pixels",
]
