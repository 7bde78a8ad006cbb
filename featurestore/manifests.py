"""A local Lance dataset's committed versions, read from its manifest file names.

Knowing whether a dataset exists or changed should not cost a process the Lance import
(~0.2 s with pyarrow.dataset and pandas): ``emofs similar CLIP`` on an unchanged store
answers from files alone. Object stores still ask Lance (see ``featurestore.versioned``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["newest_manifest", "newest_of", "local_latest_version"]

#: ``<version>.manifest`` (Lance's V1 naming) or, with V2 naming,
#: ``<2**64 - 1 - version>.manifest`` zero-padded to 20 digits (newest sorts first).
_MANIFEST = re.compile(r"^(\d+)\.manifest$")
_U64_MAX = 2**64 - 1


def newest_manifest(dataset_path: str | os.PathLike) -> tuple[int, str] | None:
    """``(version, file name)`` of a local dataset's newest committed manifest; None when
    it has no ``_versions/`` folder or no manifest in it."""
    try:
        names = os.listdir(Path(dataset_path) / "_versions")
    except (FileNotFoundError, NotADirectoryError):
        return None
    return newest_of(names)


def newest_of(names) -> tuple[int, str] | None:
    """``(version, file name)`` of the newest manifest among a ``_versions/`` listing."""
    newest = None
    for name in names:
        match = _MANIFEST.match(name)
        if match:
            digits = match.group(1)
            version = _U64_MAX - int(digits) if len(digits) == 20 else int(digits)
            if newest is None or version > newest[0]:
                newest = (version, name)
    return newest


def local_latest_version(dataset_path: str | os.PathLike) -> int | None:
    """The newest committed version of a local Lance dataset, without importing Lance."""
    newest = newest_manifest(dataset_path)
    return None if newest is None else newest[0]
