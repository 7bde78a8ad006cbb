"""Folder layouts of Emotion-LLaMA and the MER toolkit (MERTools), and their names.

Emotion-LLaMA (``minigpt4/datasets/datasets/first_face.py``) reads, next to its
annotation txt, one ``<name>.npy`` per clip from ``mae_340_UTT/`` (FaceMAE),
``maeV_399_UTT/`` (VideoMAE) and ``HL-UTT/`` (HuBERT-large); its MER2024 loader uses
``mae_340_23_UTT/``, ``maeVideo_399_23_UTT/`` and ``HL_23_UTT/``. Arrays are ``[D]`` or
``[1, D]`` (the loader unsqueezes 1-D arrays).

MERTools' extractors save ``<model>-UTT/<name>.npy`` (utterance level, ``[D]``) and
``<model>-FRA/<name>.npy`` (frame level, ``[T, D]``) under the dataset's feature root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = [
    "LAYOUTS",
    "EMOTION_LLAMA_FOLDERS",
    "EMOTION_LLAMA_ENCODERS",
    "FeatureFolder",
    "find_feature_folders",
    "default_set_name",
    "export_folder_name",
    "check_layout",
    "REPORT_EXAMPLES",
]

LAYOUTS = ("emotion-llama", "mertools")

#: Skipped files / rows listed by name in an import or export report summary.
REPORT_EXAMPLES = 5

#: emofs encoder name -> the folder Emotion-LLaMA's loader reads.
EMOTION_LLAMA_FOLDERS = {"hubert": "HL-UTT", "mae": "mae_340_UTT", "videomae": "maeV_399_UTT"}
#: Emotion-LLaMA folder (MER2023 and MER2024 loaders) -> the encoder that made it.
EMOTION_LLAMA_ENCODERS = {
    "HL-UTT": "hubert",
    "HL_23_UTT": "hubert",
    "mae_340_UTT": "mae",
    "mae_340_23_UTT": "mae",
    "maeV_399_UTT": "videomae",
    "maeVideo_399_23_UTT": "videomae",
}
_MERTOOLS_LEVEL = re.compile(r"^(?P<model>.+)-(?P<level>UTT|FRA)$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class FeatureFolder:
    """One folder of per-clip ``.npy`` files that becomes one feature set.

    Attributes:
        path: the folder.
        files: paths of its ``.npy`` files (strings, sorted by name).
        level: ``"utterance"`` (``[D]`` / ``[1, D]`` per clip), ``"frame"`` (``[T, D]``)
            or ``"auto"`` (decided from the arrays: any ``T > 1`` means frame level).
        encoder: the encoder that made the features, when the folder name says so.
    """

    path: Path
    files: tuple[str, ...]
    level: str
    encoder: str | None


def check_layout(layout: str) -> str:
    """Validate a ``--layout`` value."""
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    return layout


def _npy_files(folder: Path) -> tuple[str, ...]:
    with os.scandir(folder) as entries:
        paths = sorted(
            e.path for e in entries
            if e.name.endswith(".npy") and not e.name.startswith(".") and e.is_file()
        )
    return tuple(paths)


def _describe(folder: Path, files: tuple[str, ...], layout: str) -> FeatureFolder:
    if layout == "mertools":
        match = _MERTOOLS_LEVEL.match(folder.name)
        if match is None:
            raise InputError(
                f"{folder} is not a MERTools feature folder: its name must end in -UTT "
                "(utterance level) or -FRA (frame level); use --layout emotion-llama for "
                "other folder names"
            )
        level = "utterance" if match["level"] == "UTT" else "frame"
        return FeatureFolder(folder, files, level, None)
    return FeatureFolder(folder, files, "auto", EMOTION_LLAMA_ENCODERS.get(folder.name))


def find_feature_folders(root: str | os.PathLike, layout: str) -> list[FeatureFolder]:
    """The feature folders under ``root``: ``root`` itself if it holds ``.npy`` files,
    else each of its sub-folders that does (for ``mertools``: those named ``*-UTT`` /
    ``*-FRA``).

    Raises:
        InputError: ``root`` is missing, or holds no feature folder.
    """
    check_layout(layout)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root} is not a folder: pass the folder of .npy files or its parent")
    root = root.resolve()
    own = _npy_files(root)
    if own:
        return [_describe(root, own, layout)]
    folders = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if layout == "mertools" and not _MERTOOLS_LEVEL.match(sub.name):
            continue
        files = _npy_files(sub)
        if files:
            folders.append(_describe(sub, files, layout))
    if not folders:
        expected = (
            "<model>-UTT/ or <model>-FRA/ folders" if layout == "mertools"
            else "folders such as HL-UTT/, mae_340_UTT/, maeV_399_UTT/"
        )
        raise InputError(f"no .npy feature files in {root} or its sub-folders: expected {expected}")
    return folders


def default_set_name(folder: FeatureFolder) -> str:
    """The feature-set name an imported folder gets: its folder name (made path-safe)."""
    name = _SAFE.sub("_", folder.path.name).strip("._") or "imported"
    return name


def export_folder_name(set_name: str, spec: dict | None, layout: str, *, frame_level: bool = False) -> str:
    """The folder a feature set is exported to.

    An imported set keeps the folder it came from (recorded in its spec) when exported
    to the same layout. Otherwise ``emotion-llama`` maps ``hubert``/``mae``/``videomae``
    (with or without a weights tag such as ``hubert.large-ls960``) to ``HL-UTT``,
    ``mae_340_UTT`` and ``maeV_399_UTT`` and keeps any other name; ``mertools`` writes
    ``<name>-UTT`` (or ``<name>-FRA`` for frame-level tokens).
    """
    check_layout(layout)
    spec = spec or {}
    if spec.get("source") == "import" and spec.get("layout") == layout and spec.get("folder"):
        if not frame_level or spec.get("level") == "frame":
            return str(spec["folder"])
    if layout == "emotion-llama":
        base = set_name.split(".", 1)[0]
        return EMOTION_LLAMA_FOLDERS.get(set_name) or EMOTION_LLAMA_FOLDERS.get(base) or set_name
    base = re.sub(r"[-_](UTT|FRA)$", "", set_name) or set_name
    return f"{base}-{'FRA' if frame_level else 'UTT'}"
