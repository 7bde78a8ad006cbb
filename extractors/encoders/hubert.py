"""``hubert``: HuBERT speech encoder (transformers ``HubertModel``) on 16 kHz mono audio."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register
from ._loading import load_transformers
from .base import Encoded, Encoder, Need, Tag, pool_tokens

__all__ = ["HubertEncoder"]

_TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(32,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


@register
class HubertEncoder(Encoder):
    """Mean of the last hidden layer (vector) and frame tokens average-pooled to <= N."""

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
                "pooling": "mean over frames of the last hidden layer",
                "tokens": f"last-layer frame tokens, average-pooled to at most {self.options['tokens']}"}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import torch

        min_len = 400  # the conv stack needs ~25 ms of audio
        waves = [np.pad(w, (0, max(0, min_len - len(w)))) for w in inputs]
        waves = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in waves]
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
