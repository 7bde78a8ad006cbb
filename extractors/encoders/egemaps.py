"""``egemaps``: openSMILE eGeMAPSv02 functionals (88 hand-crafted acoustic features)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register
from .base import Encoded, Encoder, Need, Tag

__all__ = ["EgemapsEncoder"]


@register
class EgemapsEncoder(Encoder):
    """88 eGeMAPSv02 functionals per clip (no weights; real features offline)."""

    name = "egemaps"
    modality = "audio"
    input_description = "16 kHz mono audio"
    need = Need("audio")
    tags = {"v02": Tag("none", 88, None, "openSMILE eGeMAPSv02 functionals")}
    default_tag = "v02"
    in_worker = True  # ~40 ms of single-threaded openSMILE per clip: run it beside decoding

    def _load(self) -> None:
        import opensmile

        self.smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.dim = len(self.smile.feature_names)
        self.identity = {"opensmile": opensmile.__version__}

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "openSMILE eGeMAPSv02 Functionals",
                "preprocessing": {"sample_rate": 16000}, "pooling": "functionals over the clip",
                "tokens": None}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        out = []
        for wave in inputs:
            wave = np.pad(wave, (0, max(0, 1600 - len(wave))))  # >= 0.1 s
            # Smile's __call__ is process_signal without the pandas frame around the same
            # values (one SMILE graph is still built per call: openSMILE runs it to end of input).
            values = self.smile(wave[None, :], 16000)  # (1, 88, 1)
            out.append(Encoded(np.asarray(values, dtype=np.float32).reshape(-1)))  # (88,)
        return out
