"""``egemaps``: openSMILE eGeMAPSv02 functionals (88 hand-crafted acoustic features)."""

from __future__ import annotations

from typing import Any

import numpy as np

from featurestore.errors import InputError

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
        # The Smile (and openSMILE's import: pandas, audformat, ~13 MB) is built on the first
        # encode, in the decoding workers: the main process only needs the spec.
        from importlib.metadata import PackageNotFoundError, version
        from importlib.util import find_spec

        try:
            self.identity = {"opensmile": version("opensmile")}
        except PackageNotFoundError as exc:
            raise InputError("egemaps needs openSMILE: pip install opensmile") from exc
        if find_spec("opensmile") is None:
            raise InputError("openSMILE's files are missing: pip install --force-reinstall opensmile")
        self.dim = self.tags[self.default_tag].dim  # 88 eGeMAPSv02 functionals
        self._smile = None
        self._broken: str | None = None

    def smile(self):
        """The openSMILE extractor (eGeMAPSv02 functionals), built once; a build that
        failed fails every later clip at once, with the same one-line reason."""
        if self._broken is not None:
            raise InputError(self._broken)
        if self._smile is None:
            try:
                import opensmile

                self._smile = opensmile.Smile(
                    feature_set=opensmile.FeatureSet.eGeMAPSv02,
                    feature_level=opensmile.FeatureLevel.Functionals,
                )
            except Exception as exc:  # noqa: BLE001 - a broken install (native library, audformat)
                self._broken = (f"openSMILE cannot start ({type(exc).__name__}: {exc}): "
                                "pip install --force-reinstall opensmile")
                raise InputError(self._broken) from exc
        return self._smile

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
            values = self.smile()(wave[None, :], 16000)  # (1, 88, 1)
            out.append(Encoded(np.asarray(values, dtype=np.float32).reshape(-1)))  # (88,)
        return out
