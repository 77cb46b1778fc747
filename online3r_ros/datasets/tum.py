"""TUM RGB-D layout (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``) and the TUM keyframe-folder variant.

TUM RGB-D:
- lists are ``timestamp path`` lines (``#`` comments); malformed lines are reported as skipped;
- RGB and depth are associated like the TUM ``associate.py`` tool: greedy one-to-one matching by smallest
  time difference, pairs further apart than ``max_difference`` (0.02 s) rejected. RGB frames left without a
  depth partner are skipped (reason recorded) when the sequence has depth;
- depth: uint16, 5000 units per metre, 0 = no data;
- intrinsics: fr1/fr2/fr3 from the folder name (``freiburgN`` / ``frN``), or ``calibration.txt``
  (``fx fy cx cy``) in the folder, or the ``intrinsics`` argument; otherwise :class:`IntrinsicsError`.
  fr1/fr2 images (radially distorted) are undistorted by default (``undistort=True``: colour bilinear, depth
  nearest, to the OpenCV ``alpha=0`` pinhole K that ``frame.K`` then holds; ``reader.K_raw`` /
  ``reader.distortion`` keep the originals), as MASt3R-SLAM does in calibrated mode;
- ground truth: ``groundtruth.txt`` interpolated (lerp + slerp) at each frame time when bracketing samples are
  within ``max_difference``; :meth:`TumReader.gt_trajectory` returns the raw ground-truth stream.
- RGB rows whose timestamp does not increase are skipped and reported ("non-monotonic timestamp").

TUM keyframes (``tum_fr3_cabinet_keyframes``): ``raw_imgs/NNNN_rgb_raw.jpg``,
``depth_imgs/NNNN_depth_raw.png`` (5000 = 1 m), ``truth_cam_poses.txt`` row i = image i
(``t tx ty tz qx qy qz qw``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..eval.poses import interpolate_poses, tum_to_matrix
from .base import DatasetError, Frame, IntrinsicsError, SkipFrame
from .intrinsics import TUM_DISTORTION, TUM_IMAGE_SIZE, TUM_INTRINSICS, make_K, tum_intrinsics_for
from .readers_common import RGBDReaderBase


def read_tum_list(path: Path) -> tuple[list[tuple[float, str]], list[tuple[int, str]]]:
    """Parse a ``timestamp value...`` list. Returns ``(rows, bad)``: ``rows = [(t, rest)]`` in file order and
    ``bad = [(line_number, reason)]`` for malformed lines."""
    rows, bad = [], []
    text = path.read_text(errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            t = float(parts[0])
        except ValueError:
            bad.append((lineno, f"line {lineno}: timestamp {parts[0]!r} is not a number"))
            continue
        if len(parts) < 2:
            bad.append((lineno, f"line {lineno}: missing value after the timestamp"))
            continue
        if not np.isfinite(t):
            bad.append((lineno, f"line {lineno}: non-finite timestamp"))
            continue
        rows.append((t, " ".join(parts[1:])))
    return rows, bad


def associate_timestamps(
    first: np.ndarray, second: np.ndarray, max_difference: float = 0.02, offset: float = 0.0
) -> np.ndarray:
    """TUM ``associate.py`` matching: greedy one-to-one by smallest ``|a - (b + offset)|`` below
    ``max_difference``. Returns ``[M, 2]`` int index pairs into ``first`` / ``second``, sorted by ``first``.

    Candidates are generated with a sorted search (no O(N·M) table): each ``a`` is paired with the
    ``second`` entries within the window; ties are broken by index for determinism.
    """
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64) + offset
    if a.size == 0 or b.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    order_b = np.argsort(b, kind="stable")
    bs = b[order_b]
    lo = np.searchsorted(bs, a - max_difference, side="left")
    hi = np.searchsorted(bs, a + max_difference, side="right")
    counts = hi - lo
    ia = np.repeat(np.arange(a.size), counts)
    if ia.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    starts = np.repeat(lo - np.cumsum(np.concatenate([[0], counts[:-1]])), counts)
    ib_sorted = np.arange(ia.size) + starts
    ib = order_b[ib_sorted]
    diff = np.abs(a[ia] - b[ib])
    keep = diff <= max_difference
    ia, ib, diff = ia[keep], ib[keep], diff[keep]
    order = np.lexsort((ib, ia, diff))
    used_a = np.zeros(a.size, dtype=bool)
    used_b = np.zeros(b.size, dtype=bool)
    pairs = []
    for k in order:  # greedy over candidate pairs (O(candidates)), not over pixels
        i, j = ia[k], ib[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            pairs.append((i, j))
    pairs_arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs_arr[np.argsort(pairs_arr[:, 0], kind="stable")]


def read_tum_trajectory_rows(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``t tx ty tz qx qy qz qw`` rows -> ``(t [N], T_WC [N,4,4], problems)``; bad rows are dropped and
    described in ``problems``; rows are sorted by time (duplicates removed, reported)."""
    rows, bad = read_tum_list(path)
    problems = [reason for _, reason in bad]
    ts, vecs = [], []
    for t, rest in rows:
        vals = rest.split()
        try:
            v = [float(x) for x in vals]
        except ValueError:
            problems.append(f"t={t}: non-numeric pose values")
            continue
        if len(v) != 7 or not np.all(np.isfinite(v)) or np.linalg.norm(v[3:]) < 1e-9:
            problems.append(f"t={t}: expected 7 finite pose values with a non-zero quaternion")
            continue
        ts.append(t)
        vecs.append(v)
    if not ts:
        return np.zeros(0), np.zeros((0, 4, 4)), problems
    t_arr = np.asarray(ts)
    order = np.argsort(t_arr, kind="stable")
    t_arr = t_arr[order]
    T = tum_to_matrix(np.asarray(vecs)[order])
    dup = np.concatenate([[False], np.diff(t_arr) <= 0])
    if dup.any():
        problems.append(f"{int(dup.sum())} duplicate timestamps removed")
    return t_arr[~dup], T[~dup], problems


def _resolve_tum_K(folder: Path, intrinsics) -> tuple[np.ndarray | None, str | None]:
    """``(K, "fr1"|"fr2"|"fr3"|None)``; the name is set only when K comes from the folder name."""
    if intrinsics is not None:
        return None, None  # the override is applied by _init_geometry
    calib = folder / "calibration.txt"
    if calib.exists():
        try:
            vals = np.loadtxt(calib, dtype=np.float64, ndmin=1).ravel()
        except ValueError as exc:
            raise IntrinsicsError(f"{calib}: cannot read 'fx fy cx cy' ({exc})") from exc
        if vals.size < 4:
            raise IntrinsicsError(f"{calib}: expected 'fx fy cx cy', got {vals.size} numbers")
        return make_K(*vals[:4]), None
    hit = tum_intrinsics_for(folder)
    if hit is None:
        raise IntrinsicsError(
            f"{folder}: cannot tell TUM fr1/fr2/fr3 from the folder name and there is no calibration.txt; "
            f"pass intrinsics='fx,fy,cx,cy' (CLI --intrinsics). Known: {TUM_INTRINSICS}"
        )
    return hit[1], hit[0]


class TumReader(RGBDReaderBase):
    layout = "tum"
    depth_scale = 5000.0
    depth_invalid = (0,)

    def __init__(
        self,
        path: str | Path,
        intrinsics=None,
        max_difference: float = 0.02,
        use_depth: bool = True,
        undistort: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(path, **kwargs)
        rgb_list = self.path / "rgb.txt"
        if not rgb_list.exists():
            raise DatasetError(f"{self.path}: no rgb.txt (not a TUM RGB-D folder)")
        self.max_difference = float(max_difference)
        rows, bad = read_tum_list(rgb_list)
        for lineno, reason in bad:
            self._record_open_skip(-1, f"{rgb_list}:{lineno}", reason)
        # drop non-increasing rgb timestamps (keep the first occurrence, report the rest)
        kept: list[tuple[float, str]] = []
        for t, rel in rows:
            if kept and t <= kept[-1][0]:
                self._record_open_skip(
                    -1, self.path / rel, f"non-monotonic timestamp {t:.6f} s <= previous {kept[-1][0]:.6f} s"
                )
                continue
            kept.append((t, rel))
        if not kept:
            raise DatasetError(f"{rgb_list}: no usable rows")
        rgb_t = np.asarray([t for t, _ in kept])
        depth_list = self.path / "depth.txt"
        self._has_depth = use_depth and depth_list.exists()
        depth_for = [None] * len(kept)
        if self._has_depth:
            drows, dbad = read_tum_list(depth_list)
            for lineno, reason in dbad:
                self._record_open_skip(-1, f"{depth_list}:{lineno}", reason)
            pairs = associate_timestamps(rgb_t, np.asarray([t for t, _ in drows]), self.max_difference)
            for i, j in pairs:
                depth_for[i] = drows[j][1]
        entries = []
        for i, (t, rel) in enumerate(kept):
            if self._has_depth and depth_for[i] is None:
                self._record_open_skip(
                    -1, self.path / rel, f"no depth image within {self.max_difference} s of t={t:.6f}"
                )
                continue
            entries.append((t, self.path / rel, None if depth_for[i] is None else self.path / depth_for[i]))
        if not entries:
            raise DatasetError(f"{self.path}: no RGB frame could be associated with a depth image")
        self._entries = entries
        gt_path = self.path / "groundtruth.txt"
        self._gt = None
        self.gt_problems: list[str] = []
        if gt_path.exists():
            t_gt, T_gt, self.gt_problems = read_tum_trajectory_rows(gt_path)
            if t_gt.size:
                self._gt = (t_gt, T_gt)
        self._frame_gt = None
        if self._gt is not None:
            self._frame_gt = interpolate_poses(
                self._gt[0], self._gt[1], np.asarray([e[0] for e in entries]), self.max_difference
            )
        K, self.intrinsics_name = _resolve_tum_K(self.path, intrinsics)
        self._init_geometry(K, intrinsics, entries[0][1] if entries[0][1].exists() else None)
        self.K_raw, self.distortion = self.K, None
        if undistort and self.intrinsics_name in TUM_DISTORTION:
            self._setup_undistortion(TUM_DISTORTION[self.intrinsics_name], TUM_IMAGE_SIZE)

    def _entry_path(self, source_index: int) -> str:
        return str(self._entries[source_index][1])

    @property
    def has_gt(self) -> bool:
        return self._gt is not None

    def _load(self, source_index: int) -> Frame:
        t, rgb_path, depth_path = self._entries[source_index]
        if not rgb_path.exists():
            raise SkipFrame("colour image is missing", rgb_path)
        if depth_path is not None and not depth_path.exists():
            raise SkipFrame(f"depth image {depth_path.name} is missing", depth_path)
        warnings: list[str] = []
        pose = None
        if self._frame_gt is not None:
            T, ok = self._frame_gt
            if ok[source_index]:
                pose = T[source_index].copy()
            else:
                warnings.append(f"no ground truth within {self.max_difference} s of t={t:.6f}")
        return self._make_frame(source_index, t, rgb_path, depth_path, pose, warnings)

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self._gt is None else (self._gt[0].copy(), self._gt[1].copy())


_KF_RGB_RE = re.compile(r"^(\d+)_rgb_raw\.(jpg|jpeg|png)$", re.IGNORECASE)


class TumKeyframesReader(RGBDReaderBase):
    """``raw_imgs/NNNN_rgb_raw.jpg`` + ``depth_imgs/NNNN_depth_raw.png`` + ``truth_cam_poses.txt``."""

    layout = "tum_keyframes"
    depth_scale = 5000.0
    depth_invalid = (0,)

    def __init__(self, path: str | Path, intrinsics=None, fps: float = 30.0, **kwargs) -> None:
        super().__init__(path, **kwargs)
        img_dir = self.path / "raw_imgs"
        if not img_dir.is_dir():
            raise DatasetError(f"{self.path}: no raw_imgs/ folder")
        hits = sorted(
            ((int(m.group(1)), p) for p in img_dir.iterdir() if (m := _KF_RGB_RE.match(p.name))),
            key=lambda x: x[0],
        )
        if not hits:
            raise DatasetError(f"{img_dir}: no NNNN_rgb_raw.(jpg|png) images")
        self._numbers = [n for n, _ in hits]
        self._entries = [p for _, p in hits]
        depth_dir = self.path / "depth_imgs"
        self._depth_paths = [depth_dir / f"{p.name.split('_')[0]}_depth_raw.png" for p in self._entries]
        self._has_depth = depth_dir.is_dir()
        truth = self.path / "truth_cam_poses.txt"
        self._times = np.asarray(self._numbers, dtype=np.float64) / float(fps)
        self._poses: list[np.ndarray | None] = [None] * len(self._entries)
        self._has_gt = False
        self._row_problem: dict[int, str] = {}
        if truth.exists():
            # row i belongs to image i, so rows are parsed in place (a bad row must not shift the others)
            lines = [ln.strip() for ln in truth.read_text(errors="replace").splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("#")]
            for k, num in enumerate(self._numbers):
                if num >= len(lines):
                    self._row_problem[k] = f"{truth.name} has no row {num} (timestamp and pose unknown)"
                    continue
                try:
                    vals = np.asarray([float(x) for x in lines[num].replace(",", " ").split()])
                    if vals.size != 8 or not np.isfinite(vals[0]):
                        raise ValueError(f"expected 8 values, got {vals.size}")
                    self._times[k] = vals[0]
                    self._poses[k] = tum_to_matrix(vals[1:])[0]
                    self._has_gt = True
                except ValueError as exc:
                    self._row_problem[k] = f"{truth.name} row {num} is malformed ({exc})"
        hit = tum_intrinsics_for(self.path)
        K = None if intrinsics is not None else (hit[1] if hit is not None else None)
        if K is None and intrinsics is None:
            raise IntrinsicsError(
                f"{self.path}: cannot tell TUM fr1/fr2/fr3 from the folder name; "
                "pass intrinsics='fx,fy,cx,cy' (CLI --intrinsics)"
            )
        self._init_geometry(K, intrinsics, self._entries[0])

    def _load(self, source_index: int) -> Frame:
        rgb_path = self._entries[source_index]
        if not rgb_path.exists():
            raise SkipFrame("colour image is missing", rgb_path)
        depth_path = self._depth_paths[source_index] if self._has_depth else None
        if depth_path is not None and not depth_path.exists():
            raise SkipFrame(f"depth image {depth_path.name} is missing", depth_path)
        if source_index in self._row_problem:
            raise SkipFrame(self._row_problem[source_index], rgb_path)
        pose = self._poses[source_index]
        warnings: list[str] = []
        return self._make_frame(
            source_index, float(self._times[source_index]), rgb_path, depth_path,
            None if pose is None else pose.copy(), warnings,
        )  # fmt: skip

    def gt_trajectory(self) -> tuple[np.ndarray, np.ndarray] | None:
        ok = [i for i, p in enumerate(self._poses) if p is not None]
        if not ok:
            return None
        return self._times[ok].copy(), np.stack([self._poses[i] for i in ok])
