"""Keyframe factor graph: keyframe edges with their dense pixel matches (MASt3R-SLAM ``FactorGraph``).

An edge ``(i, j)`` is created from the matches of a keyframe pair, computed once by the caller (symmetric
inference + :mod:`online3r_ros.slam.matching`) and never re-matched; the points used by the optimiser are
re-read from the (continuously fused) canonical pointmaps at each solve. Each edge is stored as up to two
*directed factors* ``(a, b)``: for pixel ``pix_b`` of keyframe ``b`` the matched pixel ``pix_a`` of keyframe
``a`` and the match confidence ``q``; the residual compares ``T_ab · X_b[pix_b]`` with ``X_a[pix_a]`` in frame
``a`` (``T_ab = T_WCa⁻¹ · T_WCb``). Direction ``(i <- j)`` comes from ``idx_j_to_i`` (for each pixel of ``j``
its match in ``i``), direction ``(j <- i)`` from ``idx_i_to_j``.

Only the valid matches with ``q > Q_conf`` are kept (compact int32 indices + float32 q, about 12 bytes per
match instead of the reference's dense int64 maps and masks of ~5 MiB per edge), optionally subsampled to
``max_points_per_edge`` per direction (deterministic, seeded by the edge).

Edge acceptance (reference ``add_factors``): the valid-match fraction (``valid ∧ q > Q_conf`` over all
pixels) of each direction must be ``>= min_match_frac`` (0.1), except for consecutive keyframes
(``|i - j| == 1``), which are always kept unless the exemption is disabled (relocalisation). With ``strict``
any rejected candidate rejects the whole batch (relocalisation with ``reloc.strict``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import Tensor


class GraphError(ValueError):
    """Bad edge input (the message names the field/value)."""


@dataclass(frozen=True)
class AddEdgesResult:
    """Outcome of :meth:`FactorGraph.add_edges` for each candidate edge ``[E]``."""

    accepted: Tensor  # bool: edge added
    frac_i: Tensor  # valid-match fraction of the pixels of i (direction j <- i)
    frac_j: Tensor  # valid-match fraction of the pixels of j (direction i <- j)
    duplicate: Tensor  # bool: edge already present (not added again)
    consecutive: Tensor  # bool


@dataclass(frozen=True)
class FactorBatch:
    """All directed factors concatenated (what the optimiser consumes).

    a, b: ``[F]`` keyframe ids (residual frame ``a``, source ``b``); counts ``[F]`` points per factor;
    point_factor ``[M]`` factor of each point; pix_a, pix_b ``[M]`` flat pixel indices (int64); q ``[M]``.
    """

    a: Tensor
    b: Tensor
    counts: Tensor
    point_factor: Tensor
    pix_a: Tensor
    pix_b: Tensor
    q: Tensor

    @property
    def n_factors(self) -> int:
        return int(self.a.numel())

    @property
    def n_points(self) -> int:
        return int(self.q.numel())


def combined_match_confidence(Q_ref: Tensor, idx_src_to_ref: Tensor, Q_src: Tensor) -> Tensor:
    """``q = sqrt(Q_ref[idx] · Q_src)`` per source pixel (reference ``Q_j = sqrt(Q_ii[idx_i2j] · Q_ji)``).

    Q_ref ``[E, H, W]`` or ``[E, P]`` descriptor confidence of the reference image, idx ``[E, P]`` flat
    indices into it for each source pixel, Q_src ``[E, P]`` (or ``[E, H, W]``) -> ``[E, P]``.
    """
    E = idx_src_to_ref.shape[0]
    ref = Q_ref.reshape(E, -1)
    return torch.sqrt(torch.gather(ref, 1, idx_src_to_ref.long()) * Q_src.reshape(E, -1)).clamp_min(0)


def _as_2d(t: Tensor, E: int, name: str) -> Tensor:
    t = torch.as_tensor(t)
    if t.shape[0] != E:
        raise GraphError(f"{name} must have {E} rows (one per edge), got shape {tuple(t.shape)}")
    return t.reshape(E, -1)


def _direction(idx: Tensor, valid: Tensor, q: Tensor, E: int, P: int | None, d: str) -> tuple[Tensor, ...]:
    """One match direction as ``[E, P]`` tensors (``idx``, bool ``valid``, ``q``); ``GraphError`` on bad
    shapes (``P``: the pixel count they must have, ``None``: ``idx``'s)."""
    idx = _as_2d(idx, E, f"idx_{d}")
    P = idx.shape[1] if P is None else P
    valid, q = _as_2d(valid, E, f"valid_{d}").to(torch.bool), _as_2d(q, E, f"Q_{d}")
    if idx.shape[1] != P or valid.shape[1] != P or q.shape[1] != P:
        raise GraphError(
            f"the {d}-direction matches must be [E, {P}], got {tuple(idx.shape)}, {tuple(q.shape)}"
        )
    return idx, valid, q


def _concat_factors(factors: list, device: torch.device | None) -> FactorBatch:
    """``FactorGraph._factors`` entries -> one :class:`FactorBatch` (on the factors' device)."""
    if not factors:
        z = torch.zeros(0, dtype=torch.long, device=device or "cpu")
        return FactorBatch(z, z, z, z, z, z, torch.zeros(0, device=device or "cpu"))
    dev = factors[0][2].device
    a = torch.tensor([f[0] for f in factors], dtype=torch.long, device=dev)
    b = torch.tensor([f[1] for f in factors], dtype=torch.long, device=dev)
    counts = torch.tensor([f[3].numel() for f in factors], dtype=torch.long, device=dev)
    return FactorBatch(
        a=a,
        b=b,
        counts=counts,
        point_factor=torch.repeat_interleave(torch.arange(a.numel(), device=dev), counts),
        pix_a=torch.cat([f[2] for f in factors]).long(),
        pix_b=torch.cat([f[3] for f in factors]).long(),
        q=torch.cat([f[4] for f in factors]),
    )


class FactorGraph:
    """Growable set of keyframe edges with compact per-direction matches (see the module docstring).

    Args:
        min_match_frac: acceptance threshold on the valid-match fraction of each direction.
        Q_conf: matches with ``q <= Q_conf`` are dropped (reference ``local_opt.Q_conf``).
        max_points_per_edge: keep at most this many matches per direction (0: all), chosen at random with a
            generator seeded by ``(seed, i, j)`` so that runs are reproducible.
        device: where the matches are stored (default: where they come from).
    """

    def __init__(
        self,
        min_match_frac: float = 0.1,
        Q_conf: float = 1.5,
        max_points_per_edge: int = 0,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0.0 <= min_match_frac <= 1.0:
            raise GraphError(f"min_match_frac must be in [0, 1], got {min_match_frac}")
        if max_points_per_edge < 0:
            raise GraphError(f"max_points_per_edge must be >= 0, got {max_points_per_edge}")
        self.min_match_frac = float(min_match_frac)
        self.Q_conf = float(Q_conf)
        self.max_points_per_edge = int(max_points_per_edge)
        self.seed = int(seed)
        self.device = None if device is None else torch.device(device)
        self._lock = threading.RLock()
        self._edges: list[tuple[int, int]] = []
        self._edge_set: set[tuple[int, int]] = set()
        # directed factors: (a, b, pix_a int32, pix_b int32, q float32, edge index)
        self._factors: list[tuple[int, int, Tensor, Tensor, Tensor, int]] = []
        self._cache: FactorBatch | None = None

    # ---------------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._edges)

    @property
    def edges(self) -> tuple[Tensor, Tensor]:
        """``(ii, jj)`` ``[E]`` long of the accepted edges, in insertion order."""
        with self._lock:
            if not self._edges:
                return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            e = torch.tensor(self._edges, dtype=torch.long)
            return e[:, 0].clone(), e[:, 1].clone()

    def has_edge(self, i: int, j: int) -> bool:
        return (min(i, j), max(i, j)) in self._edge_set

    def keyframe_ids(self) -> list[int]:
        """Sorted ids of the keyframes that appear in any edge."""
        with self._lock:
            return sorted({k for e in self._edges for k in e})

    # ---------------------------------------------------------------------------------------------- adding
    def add_edges(
        self,
        ii: Tensor | list[int],
        jj: Tensor | list[int],
        idx_j_to_i: Tensor,
        valid_j: Tensor,
        Q_j: Tensor,
        idx_i_to_j: Tensor | None = None,
        valid_i: Tensor | None = None,
        Q_i: Tensor | None = None,
        *,
        min_match_frac: float | None = None,
        consecutive_exemption: bool = True,
        strict: bool = False,
    ) -> AddEdgesResult:
        """Add candidate edges ``(ii[e], jj[e])`` with their matches; returns which were accepted.

        Args (``E`` candidates, ``P = H·W`` pixels; ``[E, H, W]`` also accepted):
            idx_j_to_i: ``[E, P]`` for each pixel of ``jj[e]`` the flat index of its match in ``ii[e]``.
            valid_j: ``[E, P]`` bool match validity (convergence + 3D distance check).
            Q_j: ``[E, P]`` combined match confidence ``q`` (see :func:`combined_match_confidence`).
            idx_i_to_j, valid_i, Q_i: the other direction (optional; all three or none).
            min_match_frac: overrides the graph's threshold for this call (relocalisation uses 0.3).
            consecutive_exemption: keep ``|i - j| == 1`` edges whatever their fraction (False for reloc).
            strict: if any non-duplicate candidate is rejected, add none of them.
        ``frac_j`` / ``frac_i`` are the valid-match fractions of each direction (``frac_i = frac_j`` when only
        one direction is given). Self edges raise; edges already in the graph are not added twice.
        """
        ii_t = torch.as_tensor(ii, dtype=torch.long).reshape(-1).cpu()
        jj_t = torch.as_tensor(jj, dtype=torch.long).reshape(-1).cpu()
        E = ii_t.numel()
        if jj_t.numel() != E:
            raise GraphError(f"ii and jj must have the same length, got {E} and {jj_t.numel()}")
        if E == 0:
            z = torch.zeros(0, dtype=torch.bool)
            return AddEdgesResult(z, torch.zeros(0), torch.zeros(0), z, z)
        if bool((ii_t == jj_t).any()) or bool((ii_t < 0).any()) or bool((jj_t < 0).any()):
            raise GraphError(f"edges need two different non-negative keyframe ids, got ii={ii_t.tolist()}")
        idx_j, val_j, q_j = _direction(idx_j_to_i, valid_j, Q_j, E, None, "j")
        given_i = [x is not None for x in (idx_i_to_j, valid_i, Q_i)]
        if any(given_i) and not all(given_i):
            raise GraphError("idx_i_to_j, valid_i and Q_i must be given together")
        two_way = all(given_i)
        if two_way:
            idx_i, val_i, q_i = _direction(idx_i_to_j, valid_i, Q_i, E, idx_j.shape[1], "i")
        thr = self.min_match_frac if min_match_frac is None else float(min_match_frac)

        keep_j = val_j & (q_j > self.Q_conf)
        frac_j = keep_j.float().mean(dim=1).cpu()
        if two_way:
            keep_i = val_i & (q_i > self.Q_conf)
            frac_i = keep_i.float().mean(dim=1).cpu()
        else:
            frac_i = frac_j.clone()
        consecutive = (ii_t - jj_t).abs() == 1
        ok = torch.minimum(frac_i, frac_j) >= thr
        if consecutive_exemption:
            ok = ok | consecutive
        with self._lock:
            duplicate = torch.tensor([self.has_edge(int(a), int(b)) for a, b in zip(ii_t, jj_t, strict=True)])
            accepted = ok & ~duplicate
            if strict and bool((~ok & ~duplicate).any()):
                accepted = torch.zeros_like(accepted)
            for e in torch.nonzero(accepted).flatten().tolist():
                i, j = int(ii_t[e]), int(jj_t[e])
                edge_idx = len(self._edges)
                self._edges.append((i, j))
                self._edge_set.add((min(i, j), max(i, j)))
                self._add_factor(i, j, idx_j[e], keep_j[e], q_j[e], edge_idx)
                if two_way:
                    self._add_factor(j, i, idx_i[e], keep_i[e], q_i[e], edge_idx)
            if bool(accepted.any()):
                self._cache = None
        return AddEdgesResult(accepted, frac_i, frac_j, duplicate, consecutive)

    def _add_factor(self, a: int, b: int, idx_b_to_a: Tensor, keep: Tensor, q: Tensor, edge_idx: int) -> None:
        pix_b = torch.nonzero(keep).flatten()
        n_max = self.max_points_per_edge
        if n_max and pix_b.numel() > n_max:
            g = torch.Generator(device="cpu").manual_seed(
                (self.seed * 1_000_003 + a * 10_007 + b) & 0x7FFFFFFF
            )
            sel = torch.randperm(pix_b.numel(), generator=g)[:n_max].sort().values
            pix_b = pix_b[sel.to(pix_b.device)]
        pix_a = idx_b_to_a[pix_b]
        qv = q[pix_b]
        dev = self.device if self.device is not None else pix_b.device
        self._factors.append(
            (
                a,
                b,
                pix_a.to(dev, torch.int32),
                pix_b.to(dev, torch.int32),
                qv.to(dev, torch.float32),
                edge_idx,
            )
        )

    def remove_keyframe(self, k: int) -> int:
        """Drop every edge that involves keyframe ``k``; returns the number of edges removed."""
        with self._lock:
            keep_edges = [n for n, e in enumerate(self._edges) if k not in e]
            removed = len(self._edges) - len(keep_edges)
            if removed == 0:
                return 0
            remap = {old: new for new, old in enumerate(keep_edges)}
            self._edges = [self._edges[n] for n in keep_edges]
            self._edge_set = {(min(e), max(e)) for e in self._edges}
            self._factors = [f[:5] + (remap[f[5]],) for f in self._factors if f[5] in remap]
            self._cache = None
            return removed

    # ---------------------------------------------------------------------------------------- optimiser feed
    def factor_batch(self, touching: set[int] | None = None) -> FactorBatch:
        """The directed factors concatenated: all of them (cached until the graph changes), or those with an
        end in ``touching`` (keyframe ids; built each call, never cached: a windowed optimisation keeps no
        copy of the whole graph's matches)."""
        with self._lock:
            if touching is None and self._cache is not None:
                return self._cache
            factors = self._factors
            if touching is not None:
                factors = [f for f in factors if f[0] in touching or f[1] in touching]
            batch = _concat_factors(factors, self.device)
            if touching is None:
                self._cache = batch
            return batch

    # ------------------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict:
        """Plain dict (ints, floats, CPU tensors; loadable with ``torch.load(weights_only=True)``)."""
        with self._lock:
            return {
                "format": "online3r_ros.factor_graph",
                "version": 1,
                "min_match_frac": self.min_match_frac,
                "Q_conf": self.Q_conf,
                "max_points_per_edge": self.max_points_per_edge,
                "seed": self.seed,
                "edges": [[int(i), int(j)] for i, j in self._edges],
                "factors": [
                    {
                        "a": f[0],
                        "b": f[1],
                        "pix_a": f[2].cpu(),
                        "pix_b": f[3].cpu(),
                        "q": f[4].cpu(),
                        "edge": f[5],
                    }
                    for f in self._factors
                ],
            }

    def load_state_dict(self, state: dict) -> None:
        """Replace the graph's content with ``state`` (from :meth:`state_dict`); matches go to ``device``."""
        if not isinstance(state, dict) or state.get("format") != "online3r_ros.factor_graph":
            raise GraphError("not an online3r_ros factor graph state")
        if state.get("version") != 1:
            raise GraphError(f"unsupported factor graph state version {state.get('version')}")
        edges = [(int(e[0]), int(e[1])) for e in state["edges"]]
        dev = self.device if self.device is not None else torch.device("cpu")
        factors = []
        for f in state["factors"]:
            if not 0 <= int(f["edge"]) < len(edges):
                raise GraphError(f"factor refers to edge {f['edge']} of {len(edges)}")
            factors.append(
                (
                    int(f["a"]),
                    int(f["b"]),
                    f["pix_a"].to(dev, torch.int32),
                    f["pix_b"].to(dev, torch.int32),
                    f["q"].to(dev, torch.float32),
                    int(f["edge"]),
                )
            )
        with self._lock:
            self.min_match_frac = float(state["min_match_frac"])
            self.Q_conf = float(state["Q_conf"])
            self.max_points_per_edge = int(state["max_points_per_edge"])
            self.seed = int(state["seed"])
            self._edges = edges
            self._edge_set = {(min(e), max(e)) for e in edges}
            self._factors = factors
            self._cache = None

    def memory_report(self) -> dict:
        """Bytes of stored matches: ``{'n_edges', 'total_bytes', 'per_edge': [bytes per edge]}``."""
        with self._lock:
            per_edge = [0] * len(self._edges)
            for f in self._factors:
                per_edge[f[5]] += sum(t.numel() * t.element_size() for t in f[2:5])
            return {"n_edges": len(self._edges), "total_bytes": sum(per_edge), "per_edge": per_edge}
