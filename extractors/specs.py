"""Feature-set specs as the extraction engines use them, one function per question.

- :func:`applies`: does a feature set of this modality apply to a clip row?
- :func:`rebuild_encoder`: the encoder a stored spec names, checked to still yield it.
- :func:`group_by_settings`: which stored specs one ``extract`` call can rebuild together.

The spec itself is assembled in one place, :meth:`extractors.encoders.base.Encoder.spec`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from featurestore.errors import InputError
from featurestore.features import spec_fingerprint

from .media import MediaConfig

__all__ = ["applies", "rebuild_encoder", "encoder_name", "spec_options", "SettingsGroup", "group_by_settings",
           "spec_media"]


def applies(modality: str, row: Mapping[str, Any]) -> bool:
    """True when a feature set of ``modality`` can be extracted for the clip ``row``.

    Args:
        modality: the encoder's modality (``audio`` | ``video`` | ``text``).
        row: clip columns ``has_audio``, ``has_video``, ``has_media`` and ``subtitle``
            (missing ones count as absent).

    ``text`` needs a non-blank subtitle; ``audio`` / ``video`` need a media file with that
    stream.
    """
    if modality == "text":
        return bool((row.get("subtitle") or "").strip())
    if row.get("has_media") is False:
        return False
    return bool(row.get(f"has_{modality}"))


def spec_media(spec: Mapping[str, Any]) -> MediaConfig | None:
    """The decoding settings a spec records (None for specs without any, e.g. ``text``)."""
    return MediaConfig(**spec["media"]) if spec.get("media") else None


def spec_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder options a spec records (token counts and non-default named settings)."""
    return dict(spec.get("options") or {})


def rebuild_encoder(
    name: str,
    spec: Mapping[str, Any],
    device: str,
    *,
    fingerprint: str | None = None,
    context: str = "",
    fix: str | None = None,
):
    """Build the encoder that wrote feature set ``name`` and check it still yields its spec.

    The encoder is loaded from the spec's reference and token option; its spec (with the
    stored dtype and media settings) must have the stored fingerprint.

    Args:
        name: the feature set.
        spec: its stored spec (must hold ``ref``).
        device: resolved device.
        fingerprint: the fingerprint to match (default: the one of ``spec``).
        context: words after the feature-set name in the error (``" of the run"``).
        fix: how to fix a mismatch (default: re-run ``emofs extract``).

    Returns:
        ``(encoder, rebuilt_spec)``.

    Raises:
        InputError: the rebuilt spec differs (the message names the changed keys).
    """
    from .registry import load_encoders

    ref = spec["ref"]
    options = spec_options(spec)
    encoder = load_encoders([ref], device, options={encoder_name(spec): options} if options else None)[0]
    rebuilt = encoder.spec(spec.get("dtype", "float16"), spec_media(spec))
    if spec_fingerprint(rebuilt) != (fingerprint or spec_fingerprint(dict(spec))):
        changed = sorted(k for k in set(rebuilt) | set(spec) if rebuilt.get(k) != spec.get(k))
        raise InputError(
            f"encoder {ref} no longer matches feature set {name!r}{context} (changed: "
            f"{', '.join(changed)}): {fix or f're-run `emofs extract --encoders {ref}` first'}"
        )
    return encoder, rebuilt


def encoder_name(spec: Mapping[str, Any]) -> str:
    """The encoder family a spec's reference names (``hubert`` for ``hubert:tiny``)."""
    from .registry import parse_ref

    return parse_ref(spec["ref"]).name


@dataclass(frozen=True)
class SettingsGroup:
    """Feature sets one ``extract`` call can (re)build: same dtype and media settings.

    Attributes:
        dtype: stored float type.
        media: decoding settings (None when no set of the group records any).
        names: the feature sets.
        refs: their encoder references, in the same order.
        options: options per encoder name (``extract``'s ``options``: token counts and
            named settings).
    """

    dtype: str
    media: MediaConfig | None
    names: tuple[str, ...]
    refs: tuple[str, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def tokens(self) -> dict[str, int]:
        """Token counts per encoder name (the ``tokens`` entries of :attr:`options`)."""
        return {n: o["tokens"] for n, o in self.options.items() if "tokens" in o}


def group_by_settings(specs: Mapping[str, Mapping[str, Any]]) -> list[SettingsGroup]:
    """Group stored specs (``{name: spec}``, each with a ``ref``) by extraction settings.

    Sets sharing dtype and media settings form one group; a set recording no media
    (``text``, whose spec does not depend on them) joins the first group of its dtype.
    Within a group, names keep the order of ``specs``.
    """
    keyed: dict[str, list[str]] = {}
    for name, spec in specs.items():
        if spec.get("media"):
            key = json.dumps([spec.get("dtype", "float16"), spec["media"]], sort_keys=True, default=str)
            keyed.setdefault(key, []).append(name)
    for name, spec in specs.items():
        if not spec.get("media"):
            dtype = spec.get("dtype", "float16")
            same = next((k for k in keyed if json.loads(k)[0] == dtype), None)
            keyed.setdefault(same or json.dumps([dtype, None]), []).append(name)
    groups = []
    for names in keyed.values():
        names = [n for n in specs if n in names]  # the caller's order
        first = specs[names[0]]
        media = next((spec_media(specs[n]) for n in names if specs[n].get("media")), None)
        options = {encoder_name(specs[n]): spec_options(specs[n]) for n in names if spec_options(specs[n])}
        groups.append(SettingsGroup(first.get("dtype", "float16"), media, tuple(names),
                                    tuple(specs[n]["ref"] for n in names), options))
    return groups
