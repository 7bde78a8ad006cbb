"""What to build (:class:`IndexConfig`, also from CLI flags) and what a build did."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..groupnorm import MIN_GROUP_CLIPS
from ..parsing import csv_list
from .files import check_index_name
from .kinds import KINDS

__all__ = ["IndexConfig", "IndexBuildReport"]


@dataclass
class IndexConfig:
    """What to build.

    Attributes:
        encoders: feature-set names; two or more build a fused index.
        weights: one weight per encoder (default all 1); the fused score is the
            weighted mean of the per-encoder cosines.
        kind: ``auto``, ``flat``, ``ivf`` or ``hnsw``.
        name: index name (default: the encoder name, or ``a+b`` for a fused index).
        recall: recall@10 target the ANN search parameters are tuned to.
        nlist: IVF lists (default ``4 * sqrt(N)``, capped so each list trains on >= 39 rows).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam width.
        rebuild: rebuild from scratch even when an incremental add is possible.
        standardize: z-score every dimension with the indexed rows' mean and std before
            the cosine (the stats are kept in the manifest and applied to queries), so
            dimensions with large raw ranges (eGeMAPS' Hz and dB functionals) do not
            dominate and scores spread over [-1, 1].
        normalize: clip column (e.g. ``speaker``) whose groups are z-scored with their
            own mean / std instead (groups under ``min_group_clips`` rows, and clips
            without a value, use the indexed rows' statistics); None: off.
        min_group_clips: smallest group given its own statistics.
    """

    encoders: list[str]
    weights: list[float] | None = None
    kind: str = "auto"
    name: str | None = None
    recall: float = 0.95
    nlist: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 40
    rebuild: bool = False
    standardize: bool = True
    normalize: str | None = None
    min_group_clips: int = MIN_GROUP_CLIPS

    def __post_init__(self) -> None:
        self.encoders = [e.strip() for e in self.encoders if e and e.strip()]
        if not self.encoders:
            raise InputError("pass --encoder NAME or --fused A,B (feature sets to index)")
        if len(set(self.encoders)) != len(self.encoders):
            raise InputError(f"--fused lists an encoder twice: {','.join(self.encoders)}")
        if self.weights is None:
            self.weights = [1.0] * len(self.encoders)
        self.weights = [float(w) for w in self.weights]
        if len(self.weights) != len(self.encoders):
            raise InputError(
                f"--weights needs one value per encoder ({len(self.encoders)}: "
                f"{','.join(self.encoders)}), got {len(self.weights)}"
            )
        if any(not math.isfinite(w) or w <= 0 for w in self.weights):
            raise InputError(f"--weights must be positive numbers (got {self.weights})")
        if self.kind not in KINDS:
            raise InputError(f"--kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if self.name is None:
            self.name = "+".join(self.encoders)
        check_index_name(self.name)
        if not 0.0 < self.recall <= 1.0:
            raise InputError(f"--recall must be in (0, 1] (got {self.recall})")
        if self.nlist is not None and self.nlist < 1:
            raise InputError(f"--nlist must be >= 1 (got {self.nlist})")
        if self.hnsw_m < 4 or self.ef_construction < 8:
            raise InputError("--hnsw-m must be >= 4 and --ef-construction >= 8")
        if self.normalize is not None and self.normalize.strip().lower() in ("", "none"):
            self.normalize = None
        if self.normalize is not None:
            self.normalize = self.normalize.strip()
            if not self.standardize:
                raise InputError("--normalize z-scores each group (a per-group --standardize): "
                                 "drop --no-standardize")
        if self.min_group_clips < 2:
            raise InputError(f"--min-group-clips must be >= 2 (got {self.min_group_clips})")

    @classmethod
    def from_flags(
        cls,
        encoder: str | None = None,
        fused: str | None = None,
        weights: str | None = None,
        **rest: Any,
    ) -> IndexConfig:
        """The config of ``emofs index build`` from its flag values.

        Args:
            encoder: ``--encoder NAME`` (one feature set).
            fused: ``--fused A,B`` (comma-separated feature sets fused into one index).
            weights: ``--weights 1,0.5`` (one number per ``--fused`` encoder).
            **rest: the other fields (``kind``, ``name``, ``recall``, ``nlist``,
                ``rebuild``, ``standardize``, ``normalize``, ...), passed through.

        Returns:
            The validated config.

        Raises:
            InputError: not exactly one of ``encoder`` / ``fused``, ``weights`` without
                ``fused``, weights that are not numbers, an empty list item, or any check
                of the config itself.
        """
        if bool(encoder) == bool(fused):
            raise InputError("pass exactly one of --encoder NAME or --fused A,B")
        encoders = [encoder] if encoder else csv_list(fused, "--fused")
        if weights is not None and not fused:
            raise InputError("--weights goes with --fused A,B (one weight per encoder)")
        try:
            parsed = [float(w) for w in csv_list(weights, "--weights")] if weights else None
        except ValueError as exc:
            raise InputError(f"--weights must be numbers, e.g. 1,0.5 (got {weights!r})") from exc
        return cls(encoders, parsed, **rest)


@dataclass
class IndexBuildReport:
    """What one ``index build`` did.

    Attributes:
        name: index name.
        kind: the concrete kind built (``flat``, ``ivf``, ``hnsw``).
        mode: ``created``, ``rebuilt``, ``added`` or ``unchanged``.
        rows: rows in the index now.
        added: rows added by this build.
        dim: vector dimension.
        seconds: wall time.
        params: build and tuned search parameters.
        reason: why it was rebuilt (empty otherwise).
        skipped: rows per encoder left out because they have an older spec.
        nonfinite: rows per encoder left out because their vector holds NaN or inf
            (``emofs check --repair`` quarantines them).
        normalize: with ``--normalize``: the column, groups with their own statistics and
            the groups (with rows) that use the indexed rows' statistics.
    """

    name: str
    kind: str
    mode: str  # created | rebuilt | added | unchanged
    rows: int
    added: int
    dim: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    normalize: dict[str, Any] | None = None
    nonfinite: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "name": self.name, "kind": self.kind, "mode": self.mode, "rows": self.rows,
            "added": self.added, "dim": self.dim, "seconds": round(self.seconds, 3),
            "params": self.params, "reason": self.reason, "skipped": self.skipped,
            "normalize": self.normalize, "nonfinite": self.nonfinite,
        }
