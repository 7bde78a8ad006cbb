"""The encoder registry: ``NAME[:WEIGHTS]`` -> a loaded, frozen encoder.

WEIGHTS is a registered tag (``hubert:tiny``), a local directory (``hubert:/models/hubert``)
or a hub id (``hubert:facebook/hubert-large-ls960-ft``); without it the family's default tag
is used. Unknown names fail listing the valid ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from featurestore.errors import InputError

__all__ = ["ENCODERS", "EncoderRef", "register", "parse_ref", "resolve_weights", "build_encoder",
           "load_encoders", "encoder_table", "encoder_class"]

#: name -> Encoder subclass (filled when ``extractors.encoders`` is imported).
ENCODERS: dict[str, type] = {}


def register(cls):
    """Class decorator adding an encoder family to the registry."""
    if cls.name in ENCODERS:
        raise ValueError(f"encoder {cls.name!r} registered twice")
    if cls.default_tag not in cls.tags:
        raise ValueError(f"{cls.name}: default tag {cls.default_tag!r} is not in its tags")
    ENCODERS[cls.name] = cls
    return cls


def _load_families() -> None:
    import extractors.encoders  # noqa: F401  (registers every family)


def encoder_class(name: str):
    """The Encoder subclass registered as ``name``.

    Raises:
        InputError: unknown name (lists the valid ones).
    """
    _load_families()
    if name not in ENCODERS:
        raise InputError(
            f"unknown encoder {name!r}: valid encoders are {', '.join(sorted(ENCODERS))} "
            "(see `emofs encoders`)"
        )
    return ENCODERS[name]


@dataclass(frozen=True)
class EncoderRef:
    """A parsed encoder reference ``NAME[:WEIGHTS]``.

    Attributes:
        name: the encoder family (``hubert``).
        weights: a tag, a local directory or a hub id; None for the family's default tag.
        text: the reference as the user wrote it (for messages; not part of equality).
    """

    name: str
    weights: str | None = None
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or (f"{self.name}:{self.weights}" if self.weights else self.name)


def parse_ref(ref: str | EncoderRef) -> EncoderRef:
    """Parse ``NAME[:WEIGHTS]`` once (WEIGHTS may itself hold ':' or '/').

    An :class:`EncoderRef` is returned as it is, so callers may pass either form.

    Raises:
        InputError: an empty reference.
    """
    if isinstance(ref, EncoderRef):
        return ref
    ref = ref.strip()
    if not ref:
        raise InputError("empty encoder reference in --encoders: use e.g. hubert,mae:tiny")
    name, _, weights = ref.partition(":")
    return EncoderRef(name.strip(), weights.strip() or None, ref)


def resolve_weights(cls, weights: str | None):
    """Turn the WEIGHTS part of a reference into a :class:`Weights`."""
    from .encoders.base import Weights

    weights = weights or cls.default_tag
    if weights in cls.tags:
        location = cls.tags[weights].weights
        source = {"tiny": "tiny", "bundled": "bundled", "none": "none"}.get(location, "hub")
        return Weights(source, "" if source in ("tiny", "none") else location, weights)
    path = Path(weights).expanduser()
    if path.is_dir():
        return Weights("local", str(path.resolve()))
    if weights.startswith((".", "/", "~")) or os.sep in weights and path.parent.exists() and not path.exists():
        raise InputError(
            f"{cls.name} weights directory {weights!r} does not exist: pass an existing "
            f"directory, a hub id, or a tag ({', '.join(cls.tags)})"
        )
    if "/" not in weights and "." not in weights:  # hub ids are OWNER/NAME (timm: ARCH.TAG)
        raise InputError(f"unknown {cls.name} tag {weights!r}: valid tags are {', '.join(cls.tags)}, "
                         f"or pass a local directory or a hub id (OWNER/NAME)")
    return Weights("hub", weights)


def build_encoder(ref: str | EncoderRef, *, device: str = "cpu", options: dict[str, Any] | None = None):
    """Load the encoder named by ``ref`` on ``device``.

    Args:
        ref: ``NAME[:WEIGHTS]`` or its parsed :class:`EncoderRef`.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (already resolved).
        options: encoder options, e.g. ``{"tokens": 64}`` for ``hubert`` / ``eva``.

    Raises:
        InputError: unknown name or tag, or weights that are neither local nor reachable.
    """
    ref = parse_ref(ref)
    cls = encoder_class(ref.name)
    return cls(resolve_weights(cls, ref.weights), device=device, options=options)


def load_encoders(refs: Iterable[str | EncoderRef], device: str,
                  tokens: dict[str, int] | None = None,
                  options: dict[str, dict[str, Any]] | None = None) -> list:
    """Build every encoder of a run (before any clip is decoded, so bad weights fail first).

    Args:
        refs: references (parsed or not; blank strings are skipped).
        device: resolved device (``cpu``, ``cuda``, ``cuda:N``).
        tokens: token counts per encoder name (``{"eva": 64}``).
        options: further options per encoder name (``{"hubert": {"pooling": "mertools"}}``);
            ``tokens`` wins over an ``options`` entry ``tokens``.

    Raises:
        InputError: an encoder named twice, a ``tokens`` / ``options`` entry for an encoder
            not in ``refs``, or anything :func:`build_encoder` raises.
    """
    merged = merge_options(tokens, options)
    parsed = [parse_ref(r) for r in refs if isinstance(r, EncoderRef) or r.strip()]
    seen: dict[str, EncoderRef] = {}
    for ref in parsed:
        if ref.name in seen:
            raise InputError(f"--encoders names {ref.name!r} twice ({seen[ref.name]}, {ref}): keep one")
        seen[ref.name] = ref
    for name, opts in merged.items():
        if name not in seen:
            flag = "--tokens" if set(opts) == {"tokens"} else "--option"
            raise InputError(f"{flag} {name}...: {name!r} is not among --encoders")
    return [build_encoder(ref, device=device, options=merged.get(ref.name) or None) for ref in parsed]


def merge_options(tokens: dict[str, int] | None,
                  options: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``--option`` settings with the ``--tokens`` counts folded in: encoder -> options."""
    merged = {name: dict(opts) for name, opts in (options or {}).items()}
    for name, count in (tokens or {}).items():
        merged.setdefault(name, {})["tokens"] = count
    return merged


def _tag_available(cls, tag_name: str, tag) -> bool:
    if tag.weights in ("tiny", "none"):
        return True
    if tag.weights == "bundled":
        if hasattr(cls, "bundled_location"):  # weights shipped inside another package (per tag)
            return cls.bundled_location(tag_name) is not None
        from .encoders.text import bundled_model_dir

        return bundled_model_dir() is not None
    from .encoders.base import hub_cache

    repo = tag.weights if "/" in tag.weights else f"timm/{tag.weights}"
    return hub_cache(repo).cached_dir is not None


def settings_text(cls) -> str:
    """An encoder's options for ``--option`` / ``--tokens``, default first: ``pooling=last|mertools``."""
    parts = [f"{k}={'|'.join(v)}" for k, v in cls.choices.items()]
    parts += [f"tokens={v}" for k, v in cls.token_defaults.items()]
    return "; ".join(parts)


def encoder_table() -> list[dict[str, Any]]:
    """One row per (encoder, tag): modality, input, dim, weights, available locally."""
    _load_families()
    rows = []
    for name in sorted(ENCODERS):
        cls = ENCODERS[name]
        for tag_name, tag in cls.tags.items():
            rows.append({
                "encoder": name,
                "tag": tag_name,
                "default": tag_name == cls.default_tag,
                "modality": cls.modality,
                "input": cls.input_description,
                "dim": tag.dim,
                "token_dim": tag.token_dim,
                "weights": tag.weights,
                "available": _tag_available(cls, tag_name, tag),
                "settings": settings_text(cls),
                "note": tag.note,
            })
    return rows
