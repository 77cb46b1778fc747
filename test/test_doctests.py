"""Every docstring example (``>>>``) in the package runs and prints what it shows, as kornia's do: the
modules are found by their text, so a new example is checked without being listed here. Modules of the ROS
layer are skipped where rclpy is not installed."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "online3r_ros"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_package_has_examples() -> None:
    assert len(MODULES) >= 10 and "online3r_ros.slam.flow_prior" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name.startswith("online3r_ros.ros") and importlib.util.find_spec("rclpy") is None:
        pytest.skip("rclpy is not installed (run scripts/setup.sh)")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
