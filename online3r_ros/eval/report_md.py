"""``report.md``: a readable, deterministic Markdown report of an
:class:`~online3r_ros.eval.scoring.Evaluation` with the PNG plots it embeds (written beside it):
``trajectory.png`` (top view and x/y/z over time), ``error.png`` (translation error over time, keyframes and
loop closures marked), ``latency.png`` and ``memory.png`` when the run has latencies / memory samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plot import plot_trajectories
from .report_plots import plot_error_over_time, plot_latency_histogram, plot_memory

__all__ = ["render_report", "write_report"]


_GROUPS = {"se3": "SE(3)", "sim3": "Sim(3)", "none": "no"}


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _verdict_section(m: dict) -> list[str]:
    rows = []
    for v in m.get("verdicts") or []:
        unit = f" {v['unit']}" if v["unit"] else ""
        limits = []
        if v["fail_above"] is not None:
            limits.append(f"<= {v['fail_above']:g}{unit}")
        if v["fail_below"] is not None:
            limits.append(f">= {v['fail_below']:g}{unit}")
        value = "not measured" if v["value"] is None else f"{_num(v['value'])}{unit}"
        rows.append([f"`{v['name']}`", v["label"], value, " and ".join(limits) or "-", v["status"].upper()])
    overall = "PASS" if m.get("passed", True) else "FAIL"
    out = ["## Verdicts", "", f"Overall: **{overall}**", ""]
    return out + _table(["metric", "what", "value", "limit", "verdict"], rows)


def _ate_section(m: dict) -> list[str]:
    rows = []
    for what, entry in (m.get("ate") or {}).items():
        for al, v in (entry or {}).items():
            if "error" in v:
                rows.append([what, al, f"n/a: {v['error']}", "", "", "", "", ""])
                continue
            rows.append(
                [
                    what,
                    al,
                    *(_num(v[k]) for k in ("rmse", "mean", "median", "max")),
                    _num(v["n_matched"]),
                    _num(v["scale"]),
                ]
            )
    head = ["poses", "alignment", "RMSE [m]", "mean [m]", "median [m]", "max [m]", "matched", "scale"]
    return ["### Absolute trajectory error (ATE)", "", *_table(head, rows)]


def _rpe_section(m: dict) -> list[str]:
    rows = []
    for al, per in ((m.get("rpe") or {}).get("frames") or {}).items():
        for name, v in per.items():
            if "error" in v:
                rows.append([name.replace("_", " "), al, f"n/a: {v['error']}", "", ""])
                continue
            seg = f"{_num(v['delta'])} {v['delta_unit']}"
            tr, rot = v["translation"], v["rotation"]
            rows.append(
                [
                    seg,
                    al,
                    f"{_num(tr['rmse'])} (max {_num(tr['max'])})",
                    f"{_num(rot['rmse'])} (max {_num(rot['max'])})",
                    _num(v["n_pairs"]),
                ]
            )
    if not rows:
        return []
    head = ["segment", "alignment", "translation RMSE [m]", "rotation RMSE [deg]", "segments"]
    return ["### Relative pose error (RPE)", "", *_table(head, rows)]


def _frames_section(m: dict) -> list[str]:
    keys = (
        ("n_frames", "poses in the estimate"),
        ("n_keyframes", "keyframes"),
        ("frames_with_pose", "frames posed"),
        ("frames_without_pose", "frames lost (no pose)"),
        ("frames_relocalised", "frames relocalised"),
        ("frames_dropped", "frames dropped"),
        ("n_loop_closures", "loop closures"),
    )
    rows = [[what, _num(m[k])] for k, what in keys if m.get(k) is not None]
    lat = m.get("latency_ms") or {}
    if lat:
        rows.append(
            [
                "latency image -> pose [ms]",
                f"p50 {_num(lat['p50'])}, p90 {_num(lat['p90'])}, max {_num(lat['max'])} "
                f"({lat['count']} frames)",
            ]
        )
    for node, v in sorted((m.get("memory_rss_mb") or {}).items()):
        rows.append(
            [f"RSS of {node} [MB]", f"first {_num(v['first'])}, last {_num(v['last'])}, max {_num(v['max'])}"]
        )
    return ["## Frames, latency, memory", "", *_table(["", "value"], rows)] if rows else []


def _reconstruction_section(m: dict) -> list[str]:
    r = m.get("reconstruction")
    if r is None:
        return []
    out = ["## Reconstruction", ""]
    if "error" in r:
        return out + [f"Not computed: {r['error']}", ""]
    out += [
        f"The map ({r['n_estimate']} points) against a ground-truth cloud ({r['n_reference']} points) "
        f"fused from {r['frames_fused']} depth images at the ground-truth poses (every "
        f"{r['pixel_stride']}th pixel, depth up to {_num(r['depth_max'])} m); both voxel-downsampled to "
        f"{_num(r['voxel'])} m; the map moved by the {_GROUPS.get(r['alignment'])} trajectory alignment "
        "(fitted "
        f"on the poses); precision, recall and F-score at {_num(r['threshold'])} m.",
        "",
    ]
    rows = [
        [
            "accuracy (map -> truth) [m]",
            f"mean {_num(r['accuracy_mean'])}, median {_num(r['accuracy_median'])}",
        ],
        [
            "completeness (truth -> map) [m]",
            f"mean {_num(r['completeness_mean'])}, median {_num(r['completeness_median'])}",
        ],
        ["Chamfer distance [m]", _num(r["chamfer"])],
        [
            f"precision / recall / F-score at {_num(r['threshold'])} m",
            f"{_num(r['precision'], 3)} / {_num(r['recall'], 3)} / {_num(r['fscore'], 3)}",
        ],
    ]
    return out + _table(["", "value"], rows)


def render_report(metrics: dict, images: dict[str, str], *, title: str = "") -> str:
    """The Markdown text for ``metrics`` (a metrics.json dict with verdicts), embedding ``images``
    (``{"trajectory": "trajectory.png", ...}``, paths relative to the report)."""
    m = metrics
    lines = [f"# {title or 'Evaluation'}", ""]
    lines += [
        f"- estimate: `{m.get('estimate') or '-'}`",
        f"- ground truth: `{m.get('groundtruth') or '-'}`",
        f"- headline alignment: {_GROUPS.get(m.get('headline_alignment'), 'SE(3)')} "
        "(poses associated by timestamp)",
        "",
    ]
    lines += _verdict_section(m)
    lines += ["## Trajectory", ""]
    if "trajectory" in images:
        lines += [f"![trajectory vs ground truth]({images['trajectory']})", ""]
    if "error" in images:
        lines += [f"![translation error over time]({images['error']})", ""]
    lines += _ate_section(m) + _rpe_section(m)
    lines += _frames_section(m)
    if "latency" in images:
        lines += [f"![latency histogram]({images['latency']})", ""]
    if "memory" in images:
        lines += [f"![memory per node]({images['memory']})", ""]
    lines += _reconstruction_section(m)
    return "\n".join(lines).rstrip() + "\n"


def write_report(out_dir: str | Path, evaluation, *, title: str = "") -> dict[str, Path]:
    """Write the PNGs and ``report.md`` of ``evaluation`` into ``out_dir``; returns ``{name: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev, run = evaluation, evaluation.run
    paths: dict[str, Path] = {}
    t0 = float(run.frames[0][0]) if len(run.frames[0]) else 0.0  # plots count seconds from the first pose
    curves = {"ground truth": (ev.reference[0] - t0, ev.reference[1])}
    if ev.aligned is not None:
        curves[f"estimate ({_GROUPS.get(ev.alignment)}-aligned)"] = (ev.aligned[0] - t0, ev.aligned[1])
    ate = ((ev.metrics.get("ate") or {}).get("frames") or {}).get(ev.alignment) or {}
    subtitle = f"ATE RMSE {100 * ate['rmse']:.2f} cm ({ate['n_matched']} poses)" if "rmse" in ate else ""
    paths["trajectory"] = plot_trajectories(
        out / "trajectory.png", curves, title=title or "estimate vs ground truth", subtitle=subtitle
    )
    if ev.error is not None:
        paths["error"] = plot_error_over_time(
            out / "error.png",
            *ev.error,
            keyframe_times=None if run.keyframes is None else run.keyframes[0],
            loop_times=ev.loop_times,
        )
    if run.latency_ms is not None and len(run.latency_ms):
        paths["latency"] = plot_latency_histogram(out / "latency.png", run.latency_ms)
    if run.memory:
        paths["memory"] = plot_memory(out / "memory.png", run.memory)
    images = {k: p.name for k, p in paths.items()}
    report = out / "report.md"
    report.write_text(render_report(ev.metrics, images, title=title))
    paths["report"] = report
    return paths
