"""Encoder families, one module each; importing this package registers them all.

To add an encoder: write one module defining an :class:`~extractors.encoders.base.Encoder`
subclass decorated with ``@register`` and import it here.
"""

from . import egemaps, eva, facemesh, fer, hubert, mae, text, videomae, whisper  # noqa: F401  (registration)
from .base import Encoded, Encoder, Need, Tag, Weights

__all__ = ["Encoder", "Encoded", "Need", "Tag", "Weights"]
