"""Named metrics of a metrics.json, thresholds on them (``--fail-above ate=0.05,rpe_t=0.02``) and one verdict
line per metric, for CI gates and the report.

A metric name maps to a path in the metrics dict of :func:`~online3r_ros.eval.reports.build_metrics`
(:data:`METRICS`). A threshold on a metric that was not measured fails too: a CI gate must not pass
because the number it guards disappeared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "METRICS",
    "MetricSpec",
    "ThresholdError",
    "Verdict",
    "metric_value",
    "parse_thresholds",
    "verdicts",
]


class ThresholdError(ValueError):
    """A malformed threshold list or an unknown metric name."""


@dataclass(frozen=True)
class MetricSpec:
    """``path``: keys into the metrics dict; ``unit``; ``label``: what the number is."""

    path: tuple[str, ...]
    unit: str
    label: str


_RPE = ("rpe", "frames", "se3")
METRICS: dict[str, MetricSpec] = {
    "ate": MetricSpec(("ate", "frames", "se3", "rmse"), "m", "ATE RMSE, frames, SE(3) alignment"),
    "ate_sim3": MetricSpec(("ate", "frames", "sim3", "rmse"), "m", "ATE RMSE, frames, Sim(3) alignment"),
    "ate_kf": MetricSpec(("ate", "keyframes", "se3", "rmse"), "m", "ATE RMSE, keyframes, SE(3) alignment"),
    "rpe_t": MetricSpec((*_RPE, "per_metre", "translation", "rmse"), "m", "RPE translation RMSE per 1 m"),
    "rpe_r": MetricSpec((*_RPE, "per_metre", "rotation", "rmse"), "deg", "RPE rotation RMSE per 1 m"),
    "rpe_t_s": MetricSpec((*_RPE, "per_second", "translation", "rmse"), "m", "RPE translation RMSE per 1 s"),
    "rpe_r_s": MetricSpec((*_RPE, "per_second", "rotation", "rmse"), "deg", "RPE rotation RMSE per 1 s"),
    "lost": MetricSpec(("frames_without_pose",), "frames", "frames without pose"),
    "relocalised": MetricSpec(("frames_relocalised",), "frames", "frames relocalised"),
    "drops": MetricSpec(("frames_dropped",), "frames", "frames dropped"),
    "loops": MetricSpec(("n_loop_closures",), "", "loop closures"),
    "latency_p50": MetricSpec(("latency_ms", "p50"), "ms", "latency image->pose, median"),
    "latency_p90": MetricSpec(("latency_ms", "p90"), "ms", "latency image->pose, 90th percentile"),
    "latency_max": MetricSpec(("latency_ms", "max"), "ms", "latency image->pose, max"),
    "accuracy": MetricSpec(("reconstruction", "accuracy_mean"), "m", "map accuracy (mean, map -> truth)"),
    "completeness": MetricSpec(
        ("reconstruction", "completeness_mean"), "m", "map completeness (mean, truth -> map)"
    ),
    "chamfer": MetricSpec(("reconstruction", "chamfer"), "m", "Chamfer distance"),
    "fscore": MetricSpec(("reconstruction", "fscore"), "", "F-score"),
}


def metric_value(metrics: dict, name: str) -> float | None:
    """The value of metric ``name`` in ``metrics`` (``None`` when absent, an error entry or not finite)."""
    node = metrics
    for key in METRICS[name].path:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def parse_thresholds(text: str | None, option: str = "--fail-above") -> dict[str, float]:
    """``"ate=0.05,rpe_t=0.02"`` -> ``{"ate": 0.05, "rpe_t": 0.02}``; :class:`ThresholdError` naming the
    bad item (unknown metric, missing ``=``, not a number) and listing the known names."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ThresholdError(f"{option} {item!r}: expected METRIC=VALUE")
        if name not in METRICS:
            raise ThresholdError(f"{option}: unknown metric {name!r} (known: {', '.join(METRICS)})")
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise ThresholdError(f"{option} {item!r}: {value.strip()!r} is not a number") from exc
        if not math.isfinite(out[name]):
            raise ThresholdError(f"{option} {item!r}: the threshold must be finite")
    return out


@dataclass(frozen=True)
class Verdict:
    """One metric against its optional threshold. ``status``: ``"pass"``, ``"fail"`` (over ``fail_above``,
    under ``fail_below``, or not measured while a threshold was set) or ``"info"`` (no threshold)."""

    name: str
    label: str
    unit: str
    value: float | None
    fail_above: float | None
    fail_below: float | None
    status: str

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self) -> str:
        """``ate: 0.0326 m <= 0.05 m: PASS (ATE RMSE, frames, SE(3) alignment)``."""
        unit = f" {self.unit}" if self.unit else ""
        shown = "not measured" if self.value is None else f"{self.value:.4g}{unit}"
        checks = []
        if self.fail_above is not None:
            checks.append(f"<= {self.fail_above:g}{unit}")
        if self.fail_below is not None:
            checks.append(f">= {self.fail_below:g}{unit}")
        rule = f" (limit {' and '.join(checks)})" if checks else ""
        return f"{self.name}: {shown}{rule}: {self.status.upper()} ({self.label})"


def verdicts(
    metrics: dict,
    fail_above: dict[str, float] | None = None,
    fail_below: dict[str, float] | None = None,
) -> list[Verdict]:
    """A :class:`Verdict` for every metric of :data:`METRICS` that was measured or has a threshold, in the
    order of :data:`METRICS`."""
    fail_above, fail_below = fail_above or {}, fail_below or {}
    out = []
    for name, spec in METRICS.items():
        value = metric_value(metrics, name)
        hi, lo = fail_above.get(name), fail_below.get(name)
        if value is None and hi is None and lo is None:
            continue
        if hi is None and lo is None:
            status = "info"
        elif value is None or (hi is not None and value > hi) or (lo is not None and value < lo):
            status = "fail"
        else:
            status = "pass"
        out.append(Verdict(name, spec.label, spec.unit, value, hi, lo, status))
    return out
