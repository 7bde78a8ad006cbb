"""``hubert``: HuBERT speech encoder (transformers ``HubertModel``) on 16 kHz mono audio.

Two poolings (option ``pooling``):

- ``last`` (default): the mean over frames of the last hidden layer.
- ``mertools``: Emotion-LLaMA's ``HL-UTT`` features as MERTools extracts them: the audio
  (normalised whole) is cut into 10 s pieces, each piece runs alone, the **sum of the last
  four hidden layers** is taken per frame, and the vector is the mean over every frame of
  every piece (utterance level).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register
from ._loading import load_transformers
from .base import Encoded, Encoder, Need, Tag, pool_tokens

__all__ = ["HubertEncoder", "MERTOOLS_PIECE", "MERTOOLS_LAYERS"]

_POOLINGS = {
    "last": "mean over frames of the last hidden layer",
    "mertools": "MERTools HL-UTT (Emotion-LLaMA): audio in 10 s pieces, sum of the last 4 hidden "
                "layers per frame, mean over every frame",
}

_TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


MIN_SAMPLES = 400  # the conv stack needs ~25 ms of audio


def _normalized(wave: np.ndarray) -> np.ndarray:
    """A clip padded to :data:`MIN_SAMPLES` and scaled to zero mean, unit variance.  # (S,)"""
    wave = np.pad(wave, (0, max(0, MIN_SAMPLES - len(wave))))
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


#: MERTools runs long audio in pieces of this many samples (10 s at 16 kHz).
MERTOOLS_PIECE = 160_000
MERTOOLS_LAYERS = 4  # hidden layers summed (the last four)


@register
class HubertEncoder(Encoder):
    """Pooled frames (vector, see ``pooling``) and frame tokens average-pooled to <= N."""

    name = "hubert"
    modality = "audio"
    input_description = "16 kHz mono speech, zero-mean unit-variance normalised"
    need = Need("audio")
    tags = {
        "chinese-large": Tag("TencentGameMate/chinese-hubert-large", 1024, 1024,
                             "the checkpoint Emotion-LLaMA used"),
        "large-ls960": Tag("facebook/hubert-large-ls960-ft", 1024, 1024),
        "tiny": Tag("tiny", 32, 32, "random weights, same architecture (tests, demo)"),
    }
    default_tag = "chinese-large"
    token_defaults = {"tokens": 64}
    choices = {"pooling": ("last", "mertools")}

    def _load(self) -> None:
        from transformers import HubertConfig, HubertModel

        self.model, self.identity = load_transformers(
            self.name, HubertModel, self.weights, lambda: HubertConfig(**_TINY), _TINY)
        self.model.to(self.torch_device())
        self.dim = self.token_dim = int(self.model.config.hidden_size)
        # Padding only leaves outputs unchanged with layer-norm feature extractors.
        self._can_pad = self.model.config.feat_extract_norm == "layer"

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "transformers.HubertModel",
                "preprocessing": {"sample_rate": 16000, "normalize": "zero-mean unit-variance"},
                "pooling": _POOLINGS[self.options["pooling"]],
                "tokens": f"{'summed last-4-layer' if self._mertools else 'last-layer'} frame tokens, "
                          f"average-pooled to at most {self.options['tokens']}"}

    @property
    def _mertools(self) -> bool:
        return self.options["pooling"] == "mertools"

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        if self._mertools:
            return [self._encode_mertools(w) for w in inputs]
        return self._encode_last(inputs)

    def _encode_mertools(self, wave: np.ndarray) -> Encoded:
        """One clip as MERTools does it: 10 s pieces, sum of the last 4 layers, frame mean."""
        import torch

        wave = _normalized(wave).astype(np.float32)
        pieces = [wave[i : i + MERTOOLS_PIECE] for i in range(0, len(wave), MERTOOLS_PIECE)]
        if len(pieces) > 1 and len(pieces[-1]) < MIN_SAMPLES:  # a sliver too short for the conv stack
            pieces[-2] = np.concatenate([pieces[-2], pieces.pop()])
        full = [p for p in pieces if len(p) == MERTOOLS_PIECE]
        groups = ([np.stack(full)] if full else []) + [p[None] for p in pieces if len(p) != MERTOOLS_PIECE]
        frames = []
        for batch in groups:  # equal lengths per forward: no padding, exact per piece
            x = torch.from_numpy(batch).to(self.torch_device())  # (P, S)
            with torch.inference_mode(), self.autocast():
                states = self.model(x, output_hidden_states=True).hidden_states
            summed = torch.stack(states[-MERTOOLS_LAYERS:]).float().sum(0)  # (P, T, D)
            frames.append(summed.reshape(-1, summed.shape[-1]))  # (P*T, D)
        every = torch.cat(frames)  # (T_all, D)
        return Encoded(every.mean(0).cpu().numpy(), pool_tokens(every, self.options["tokens"]))

    def _encode_last(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import torch

        waves = [_normalized(w) for w in inputs]
        groups = [list(range(len(waves)))] if self._can_pad else [[i] for i in range(len(waves))]
        out: list[Encoded | None] = [None] * len(waves)
        dev = self.torch_device()
        for group in groups:
            longest = max(len(waves[i]) for i in group)
            batch = np.zeros((len(group), longest), np.float32)  # (B, S)
            mask = np.zeros((len(group), longest), np.int64)
            for row, i in enumerate(group):
                batch[row, : len(waves[i])] = waves[i]
                mask[row, : len(waves[i])] = 1
            x, m = torch.from_numpy(batch).to(dev), torch.from_numpy(mask).to(dev)
            with torch.inference_mode(), self.autocast():
                hidden = self.model(x, attention_mask=m if self._can_pad else None).last_hidden_state
            hidden = hidden.float()  # (B, T, D)
            lengths = self.model._get_feat_extract_output_lengths(m.sum(-1)).tolist()
            for row, i in enumerate(group):
                frames = hidden[row, : max(1, int(lengths[row]))]  # (T_i, D)
                out[i] = Encoded(frames.mean(0).cpu().numpy(), pool_tokens(frames, self.options["tokens"]))
        return out
