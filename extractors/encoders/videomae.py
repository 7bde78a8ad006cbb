"""``videomae``: VideoMAE (transformers ``VideoMAEModel``) on face crops over the clip.

Option ``frames``: ``clip`` (default) encodes one 16-frame window spread over the whole clip;
``utterance`` encodes :data:`UTTERANCE_WINDOWS` consecutive 16-frame windows of the clip's
face crops and averages their vectors, as Emotion-LLaMA's ``maeV_399_UTT`` features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import register
from ._loading import load_transformers
from .base import Encoded, Encoder, Need, Tag
from .vision import IMAGENET_MEAN, IMAGENET_STD, to_video_pixels

__all__ = ["VideoMaeEncoder", "UTTERANCE_WINDOWS"]

#: 16-frame windows averaged by the ``utterance`` option (64 face crops: the decoder's
#: default ``max_frames``).
UTTERANCE_WINDOWS = 4

_TINY = dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=32,
             num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@register
class VideoMaeEncoder(Encoder):
    """Mean of all last-layer tokens (vector); per-time-step mean over patches (tokens)."""

    name = "videomae"
    modality = "video"
    input_description = "16 face crops sampled uniformly over the clip"
    need = Need("face_clip", size=224, frames=16)
    tags = {
        "large": Tag("MCG-NJU/videomae-large", 1024, 1024),
        "base": Tag("MCG-NJU/videomae-base", 768, 768),
        "tiny": Tag("tiny", 32, 32, "random weights, same architecture (tests, demo)"),
    }
    default_tag = "large"
    choices = {"frames": ("clip", "utterance")}

    def _load(self) -> None:
        from transformers import VideoMAEConfig, VideoMAEModel

        self.model, self.identity = load_transformers(
            self.name, VideoMAEModel, self.weights, lambda: VideoMAEConfig(**_TINY), _TINY)
        self.model.to(self.torch_device())
        cfg = self.model.config
        self.dim = self.token_dim = int(cfg.hidden_size)
        self.image_size, self.n_frames = int(cfg.image_size), int(cfg.num_frames)
        self.t_steps = self.n_frames // int(cfg.tubelet_size)
        self.windows = UTTERANCE_WINDOWS if self.options["frames"] == "utterance" else 1
        if self.windows > 1:
            self.need = Need("face_clip", size=224, frames=self.n_frames * self.windows)

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "transformers.VideoMAEModel",
                "preprocessing": {"size": self.image_size, "frames": self.n_frames,
                                  "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                "pooling": "mean of all last-layer tokens" + (
                    f", then the mean over {self.windows} consecutive {self.n_frames}-frame windows"
                    if self.windows > 1 else ""),
                "tokens": f"{self.t_steps} temporal tokens (mean over spatial patches per tubelet step)"}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import torch

        # (B*W, F, H, W, 3): each clip's crops cut into W windows of F frames
        clips = np.stack([_fit_frames(c, self.n_frames * self.windows) for c in inputs])
        clips = clips.reshape(-1, self.n_frames, *clips.shape[2:])
        pixels = to_video_pixels(clips, self.image_size, IMAGENET_MEAN, IMAGENET_STD,
                                 self.torch_device())  # (B, F, 3, S, S), channel-first memory
        with torch.inference_mode(), self.autocast():
            hidden = self.model(pixel_values=pixels).last_hidden_state  # (B*W, T*P, D)
        hidden = hidden.float()
        b, n, d = hidden.shape
        temporal = hidden.reshape(b, self.t_steps, n // self.t_steps, d).mean(2)  # (B, T, D)
        w = self.windows
        vectors = hidden.mean(1).reshape(-1, w, d).mean(1).cpu().numpy()  # (B, D): mean over windows
        temporal = temporal.reshape(-1, w * self.t_steps, d).cpu().numpy()  # (B, W*T, D)
        return [Encoded(v, t) for v, t in zip(vectors, temporal)]


def _fit_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """Resample a ``(F, H, W, 3)`` crop sequence to exactly ``n`` frames (uniform)."""
    if len(frames) == n:
        return frames
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return frames[idx]
