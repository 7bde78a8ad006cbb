"""`emofs vacuum`: compact every dataset of the store and delete the files only old
versions still reference.

Batched writes leave small fragments, and compaction (``featurestore.compaction``, or here)
rewrites them into large ones; the replaced files stay on disk for Lance's version history
until old versions are cleaned up. Only versions older than ``older_than`` are removed
(never the current one), so readers of a recent version are safe; run it while no other
emofs command writes to the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from .errors import InputError
from .features import features_name
from .predictions import predictions_name
from .schema import CLIPS, ERRORS
from .store import Store

__all__ = ["VacuumRow", "vacuum", "parse_age"]

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


def vacuum(store: Store, older_than: timedelta = timedelta(hours=1)) -> list[VacuumRow]:
    """Compact each dataset into as few fragments as fit, then clean up old versions."""
    names = [CLIPS, ERRORS]
    names += [features_name(n) for n in store.feature_sets()]
    names += [predictions_name(n) for n in store.prediction_runs()]
    rows = []
    for name in names:
        ds = store.dataset(name)
        if ds is None:
            continue
        fragments, size = ds.get_fragments(), store.size_bytes(name)
        if len(fragments) > 1 or any(f.metadata.num_deletions for f in fragments):
            ds.optimize.compact_files()
        ds = store.dataset(name)
        stats = ds.cleanup_old_versions(older_than=older_than)
        rows.append(VacuumRow(name, len(fragments), len(ds.get_fragments()),
                              int(stats.old_versions), size, store.size_bytes(name)))
    return rows
