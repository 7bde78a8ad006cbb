"""``mae``: ViT-MAE (transformers ``ViTMAEModel``, mask ratio 0) on face crops.

Option ``frames``: ``peak`` (default) encodes the peak frame's face crop; ``utterance`` encodes
:data:`UTTERANCE_FRAMES` face crops spread over the clip and averages their vectors, as
Emotion-LLaMA's ``mae_340_UTT`` features (MERTools averages every face frame of the clip).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register
from ._loading import load_transformers
from .base import Encoded, Encoder, Need, Tag
from .vision import IMAGENET_MEAN, IMAGENET_STD, to_pixels

__all__ = ["MaeEncoder", "UTTERANCE_FRAMES"]

#: Face crops averaged by the ``utterance`` option.
UTTERANCE_FRAMES = 16

_TINY = dict(image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=64, mask_ratio=0.0,
             decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
             decoder_intermediate_size=64)


@register
class MaeEncoder(Encoder):
    """Mean of the last-layer patch tokens (no masking, identity patch order)."""

    name = "mae"
    modality = "video"
    input_description = "face crop of the peak frame"
    need = Need("peak_face", size=224)
    tags = {
        "large": Tag("facebook/vit-mae-large", 1024),
        "base": Tag("facebook/vit-mae-base", 768),
        "tiny": Tag("tiny", 32, None, "random weights, same architecture (tests, demo)"),
    }
    default_tag = "large"
    choices = {"frames": ("peak", "utterance")}

    def _load(self) -> None:
        from transformers import ViTMAEConfig, ViTMAEModel

        if self.options["frames"] == "utterance":
            self.need = Need("face_clip", size=224, frames=UTTERANCE_FRAMES)
        self.model, self.identity = load_transformers(
            self.name, ViTMAEModel, self.weights, lambda: ViTMAEConfig(**_TINY), _TINY)
        self.model.config.mask_ratio = 0.0
        self.model.embeddings.config.mask_ratio = 0.0
        self.model.to(self.torch_device())
        self.dim = int(self.model.config.hidden_size)
        self.image_size = int(self.model.config.image_size)

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "transformers.ViTMAEModel", "mask_ratio": 0.0,
                "preprocessing": {"size": self.image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                "pooling": "mean of last-layer patch tokens (CLS excluded)"
                           + (f", then the mean over {UTTERANCE_FRAMES} face crops spread over the clip"
                              if self.options["frames"] == "utterance" else ""),
                "tokens": None}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        if self.options["frames"] == "utterance":  # (F, S, S, 3) per clip: mean of frame vectors
            flat = self._vectors(np.concatenate(inputs))  # (B*F, D)
            counts = np.cumsum([0] + [len(x) for x in inputs])
            return [Encoded(flat[a:b].mean(0)) for a, b in zip(counts[:-1], counts[1:])]
        return [Encoded(v) for v in self._vectors(np.stack(inputs))]

    def _vectors(self, images: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` face crops -> ``(N, D)`` vectors."""
        import torch

        pixels = to_pixels(images, self.image_size, IMAGENET_MEAN, IMAGENET_STD, self.torch_device())  # (B, 3, S, S)
        n_patches = (self.image_size // self.model.config.patch_size) ** 2
        noise = torch.arange(n_patches, device=pixels.device, dtype=torch.float32)
        noise = noise.expand(pixels.shape[0], -1)  # identity order: deterministic
        with torch.inference_mode(), self.autocast():
            hidden = self.model(pixel_values=pixels, noise=noise).last_hidden_state  # (B, 1+N, D)
        return hidden[:, 1:].float().mean(1).cpu().numpy()  # (B, D)
