"""Tiered compaction: keep the number of Lance fragments small while writing in batches.

Every batch commit adds a fragment, and a ``merge_insert`` reads the key column of every
fragment (about 0.09 ms each on this machine): a 100k-clip extraction committed 16 clips
at a time would end with 6,250 fragments per dataset and half a second per commit. So after
each write, when more than ``FRAGMENTS_PER_TIER`` fragments are smaller than a tier's size
(256 rows, 4k, 64k, 1M, ...), they are merged into fragments of that size. Each row is
rewritten about once per tier (log16 of the row count: 3 times at 100k clips), and a
dataset keeps at most 16 fragments per tier whatever its size. (64 per tier rewrote less
but left commits 1.6x slower: bench/bench_writes.py.)
"""

from __future__ import annotations

__all__ = ["FRAGMENTS_PER_TIER", "FIRST_TIER_ROWS", "compaction_target", "compact_if_fragmented"]

FRAGMENTS_PER_TIER = 16
FIRST_TIER_ROWS = 256


def compaction_target(fragment_rows: list[int], per_tier: int = FRAGMENTS_PER_TIER,
                      first_tier: int = FIRST_TIER_ROWS) -> int | None:
    """Rows per fragment to compact to (the largest over-full tier), or None."""
    if len(fragment_rows) <= per_tier:
        return None
    target, tier = None, first_tier
    while True:
        if sum(rows < tier for rows in fragment_rows) > per_tier:
            target = tier
        if tier > max(fragment_rows):
            return target
        tier *= per_tier


def compact_if_fragmented(ds) -> bool:
    """Compact the Lance dataset ``ds`` when a tier is over-full; True if it did."""
    target = compaction_target([f.metadata.physical_rows for f in ds.get_fragments()],
                               FRAGMENTS_PER_TIER, FIRST_TIER_ROWS)
    if target is None:
        return False
    try:
        ds.optimize.compact_files(target_rows_per_fragment=target)
    except Exception:  # noqa: BLE001 - e.g. a commit conflict with another writer
        return False  # only an optimisation: the data is intact, the next write tries again
    return True
