"""Named extraction recipes (the encoders and settings a published model was trained on) and
the parsers of the per-encoder flags ``--option`` and ``--tokens``.

A recipe is a set of encoder references and their named settings (``choices`` options of
the registry's encoders); it adds no encoder of its own. ``emofs extract --recipe NAME``
uses the recipe's references unless ``--encoders`` names the user's own weights for the
same encoders (``mae:/models/mer-mae``), and applies the settings either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featurestore.errors import InputError

__all__ = ["Recipe", "RECIPES", "recipe_settings", "parse_encoder_options", "parse_token_counts"]


@dataclass(frozen=True)
class Recipe:
    """Encoders (default references, in the model's token order) and their settings."""

    name: str
    encoders: tuple[str, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""


RECIPES = {
    "emotion-llama": Recipe(
        "emotion-llama",
        # <FeatureHere> order of Emotion-LLaMA (first_face.py): FaceMAE, VideoMAE, audio; then EVA's CLS.
        ("mae:large", "videomae:large", "hubert:chinese-large", "eva:g-laion400m"),
        {"mae": {"frames": "utterance"}, "videomae": {"frames": "utterance"},
         "hubert": {"pooling": "mertools"}, "eva": {"layout": "minigptv2"}},
        "Emotion-LLaMA's features: MER's MAE and VideoMAE (pass their converted directories as "
        "mae:DIR,videomae:DIR) averaged over the clip's face frames, chinese-hubert-large with "
        "MERTools' HL-UTT pooling, EVA-CLIP-g at 448 px on the first frame (MiniGPT-v2 layout)",
    ),
}


def recipe_settings(name: str, encoders: list[str] | None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``(encoder references, options)`` of recipe ``name``.

    Args:
        name: a key of :data:`RECIPES`.
        encoders: the user's ``--encoders`` (None: the recipe's own references); the
            recipe's settings apply to those of its encoders the user names.

    Raises:
        InputError: an unknown recipe, or ``--encoders`` naming none of its encoders.
    """
    from .registry import parse_ref

    recipe = RECIPES.get(name)
    if recipe is None:
        raise InputError(f"unknown --recipe {name!r}: valid recipes are {', '.join(RECIPES)}")
    refs = list(encoders) if encoders else list(recipe.encoders)
    names = {parse_ref(r).name for r in refs}
    if not names & set(recipe.options):
        raise InputError(f"--recipe {name} sets {', '.join(recipe.options)}; --encoders names none of them")
    return refs, {k: dict(v) for k, v in recipe.options.items() if k in names}


def parse_encoder_options(text: str | None) -> dict[str, dict[str, Any]]:
    """Parse ``--option`` (``"hubert.pooling=mertools,eva.layout=minigptv2"``).

    Values stay strings except whole numbers (``hubert.tokens=32``). The encoder checks
    names and values when it is built (:class:`~extractors.encoders.base.Encoder`).

    Raises:
        InputError: an item that is not ``ENCODER.NAME=VALUE``.
    """
    out: dict[str, dict[str, Any]] = {}
    if text is None or not text.strip():
        return out
    for part in [p.strip() for p in text.split(",")]:
        key, sep, value = part.partition("=")
        encoder, dot, option = key.strip().partition(".")
        if not (sep and dot and encoder and option and value.strip()):
            raise InputError(f"--option takes ENCODER.NAME=VALUE items, e.g. hubert.pooling=mertools (got {part!r})")
        value = value.strip()
        out.setdefault(encoder, {})[option.strip()] = int(value) if value.isdigit() else value
    return out


def parse_token_counts(text: str | None) -> dict[str, int]:
    """Parse ``--tokens`` (``"eva=64,hubert=32"``) into ``{"eva": 64, "hubert": 32}``.

    None, ``""`` and ``"none"`` give ``{}``.

    Raises:
        InputError: an empty item, or an item that is not ``NAME=COUNT``.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return {}
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise InputError(f"--tokens takes a comma-separated list without empty items (got {text!r})")
    counts: dict[str, int] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--tokens takes NAME=COUNT pairs, e.g. eva=64,hubert=32 (got {part!r})")
        counts[name.strip()] = int(value)
    return counts
