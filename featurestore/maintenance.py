"""`emofs vacuum`: compact every dataset of the store and delete the files only old
versions still reference.

Batched writes leave small fragments, and compaction (``featurestore.compaction``, or here)
rewrites them into large ones; the replaced files stay on disk for Lance's version history
until old versions are cleaned up. Only versions older than ``older_than`` are removed
(never the current one), so readers of a recent version are safe. Each dataset is vacuumed
under the store's write lock, so writers of other emofs processes wait for it (and it for
them) instead of racing its compaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import InputError
from .features import features_name
from .predictions import predictions_name
from .schema import CLIPS, ERRORS
from .store import Store

__all__ = ["VacuumRow", "VacuumReport", "vacuum", "parse_age"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``0``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w`` as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", str(text).lower())
    if not match or (match.group(2) == "" and match.group(1) != "0"):
        raise InputError(f"--older-than takes 0 or a number with s, m, h, d or w (e.g. 12h, 7d); got {text!r}")
    value, unit = int(match.group(1)), match.group(2) or "s"
    return timedelta(**{_UNITS[unit]: value})


@dataclass
class VacuumRow:
    """What vacuum did to one dataset."""

    dataset: str
    fragments_before: int
    fragments_after: int
    versions_removed: int
    bytes_before: int
    bytes_after: int


@dataclass
class VacuumReport:
    """What one vacuum did to the store.

    Attributes:
        datasets: one :class:`VacuumRow` per dataset.
        bytes_before: size of the whole store before.
        bytes_after: size of the whole store after.
    """

    datasets: list[VacuumRow] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (``emofs vacuum --json``)."""
        return {"datasets": [vars(r) for r in self.datasets], "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after}


def vacuum(store: Store, older_than: timedelta | str = timedelta(hours=1)) -> VacuumReport:
    """Compact each dataset into as few fragments as fit, then clean up old versions.

    Args:
        store: the store to vacuum (other emofs writers wait for each dataset's turn).
        older_than: delete the files only versions older than this still use; a
            timedelta or a :func:`parse_age` string (``"0"``, ``"12h"``, ``"7d"``).

    Returns:
        A :class:`VacuumReport`: per-dataset rows and the store size before and after.

    Raises:
        InputError: ``older_than`` is a string :func:`parse_age` does not read.
        StoreError: the store is not writable (before anything is touched).
    """
    if isinstance(older_than, str):
        older_than = parse_age(older_than)
    store.check_writable()
    names = [CLIPS, ERRORS]
    names += [features_name(n) for n in store.feature_sets()]
    names += [predictions_name(n) for n in store.prediction_runs()]
    report = VacuumReport(bytes_before=store.size_bytes())
    for name in names:
        with store.writing():
            ds = store.dataset(name)
            if ds is None:
                continue
            fragments, size = ds.get_fragments(), store.size_bytes(name)
            if len(fragments) > 1 or any(f.metadata.num_deletions for f in fragments):
                ds.optimize.compact_files()
            ds = store.dataset(name)
            stats = ds.cleanup_old_versions(older_than=older_than)
            report.datasets.append(VacuumRow(name, len(fragments), len(ds.get_fragments()),
                                             int(stats.old_versions), size, store.size_bytes(name)))
    report.bytes_after = store.size_bytes()
    return report
