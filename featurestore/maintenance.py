"""`emofs vacuum`: compact every dataset of the store and delete the files only old
versions still reference.

Batched writes leave small fragments, and compaction (``featurestore.compaction``, or here)
rewrites them into large ones; the replaced files stay on disk for Lance's version history
until old versions are cleaned up. A version is removed only once it has not been the
current one for ``older_than`` (its age counts from the commit that replaced it, not from
its own commit as Lance counts: a version current for a week and replaced a second ago is
what a running reader holds), and never the current one. So a reader that opened a version
is safe for ``older_than`` after it opened it; ``--older-than 0`` removes every version but
the current one at once, and emofs readers caught mid-read reopen the latest version and
read again (``featurestore.vanished``). Each dataset is vacuumed under the store's write
lock, so writers of other emofs processes wait for it (and it for them) instead of racing
its compaction.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import InputError
from .features import features_name
from .predictions import predictions_name
from .schema import CLIPS, ERRORS
from .store import Store

__all__ = ["VacuumRow", "VacuumReport", "vacuum", "parse_age", "cleanup_retired"]

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
        older_than: delete the files only versions replaced longer ago than this still
            use; a timedelta or a :func:`parse_age` string (``"0"``, ``"12h"``, ``"7d"``).

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
            removed = cleanup_retired(ds, older_than)
            report.datasets.append(VacuumRow(name, len(fragments), len(ds.get_fragments()),
                                             removed, size, store.size_bytes(name)))
    report.bytes_after = store.size_bytes()
    return report


def cleanup_retired(ds, older_than: timedelta) -> int:
    """Delete the versions of ``ds`` (and the files only they use) that stopped being the
    current version more than ``older_than`` ago; returns how many were removed.

    A version stops being current when the next one is committed, so its age is the next
    version's commit time. ``older_than`` of 0 removes every version but the current one.
    """
    if older_than <= timedelta(0):
        return int(ds.cleanup_old_versions(older_than=timedelta(0)).old_versions)
    history = sorted(ds.versions(), key=lambda v: v["version"])
    now = time.time()  # Lance's timestamps are naive local times: .timestamp() reads them so
    retired = [v["version"] for v, successor in zip(history, history[1:])
               if now - successor["timestamp"].timestamp() >= older_than.total_seconds()]
    if not retired:
        return 0
    try:
        stats = ds.cleanup_old_versions(older_than=timedelta(0), versions=retired)
    except TypeError:  # a pylance without ``versions=``: Lance's own age (since each commit)
        stats = ds.cleanup_old_versions(older_than=older_than)
    return int(stats.old_versions)
