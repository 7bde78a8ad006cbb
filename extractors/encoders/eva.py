"""``eva``: EVA-CLIP-g vision tower (timm ``Eva``) on a full frame.

Two layouts (option ``layout``):

- ``pooled`` (default): the peak frame at 224 px (short side, centre crop); vector = the
  last layer's CLS token (after norm), tokens = the patch grid average-pooled to ``tokens``.
- ``minigptv2``: what MiniGPT-v2 / Emotion-LLaMA feed their projectors: the clip's **first
  frame squashed to 448x448** (bicubic, CLIP normalisation), the **second-last block's**
  output (BLIP-2 drops EVA-CLIP-g's last block), then ``ln_vision`` (a LayerNorm without
  learned scale: MiniGPT-v2 creates it fresh and freezes it); vector = that CLS token (for
  ``cls_tk_llama_proj``), tokens = all 1024 patch tokens (the LLM merges 4 into one for
  ``llama_proj``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import register
from ._loading import check_hub, seeded, unavailable
from .base import TINY_SEED, Encoded, Encoder, Need, Tag, config_hash, hash_files
from .vision import to_pixels

__all__ = ["EvaEncoder", "TIMM_ARCH", "TINY_ARGS", "MINIGPT_SIZE", "LN_VISION_EPS"]

TIMM_ARCH = "eva_giant_patch14_clip_224"
TINY_ARGS = dict(embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=0)
MINIGPT_SIZE = 448  # MiniGPT-v2's image size
LN_VISION_EPS = 1e-5  # torch.nn.LayerNorm's default, as MiniGPT-v2's ln_vision
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@register
class EvaEncoder(Encoder):
    """CLS token (vector) and patch tokens average-pooled over the patch grid to T (tokens).

    The MiniGPT-v2 4->1 merge (concatenating 4 adjacent tokens) is left to the LLM side.
    """

    name = "eva"
    modality = "video"
    input_description = "the full peak frame (short side resized, centre crop)"
    need = Need("peak_image", size=224)
    tags = {
        "g-laion400m": Tag(f"{TIMM_ARCH}.laion400m", 1408, 1408,
                           "EVA-CLIP-g as in MiniGPT-v2 / Emotion-LLaMA"),
        "g-merged2b": Tag(f"{TIMM_ARCH}.merged2b", 1408, 1408),
        "tiny": Tag("tiny", 64, 64, "random weights, same architecture (tests, demo)"),
    }
    default_tag = "g-laion400m"
    token_defaults = {"tokens": 256}
    choices = {"layout": ("pooled", "minigptv2")}

    def _load(self) -> None:
        import timm

        w = self.weights
        minigpt = self.options["layout"] == "minigptv2"
        size = {"img_size": MINIGPT_SIZE} if minigpt else {}
        if minigpt:
            if self.options["tokens"] not in (self.token_defaults["tokens"], (MINIGPT_SIZE // 14) ** 2):
                from featurestore.errors import InputError

                raise InputError("--tokens eva: the minigptv2 layout keeps every patch token "
                                 "(MiniGPT-v2 merges them itself): drop --tokens eva")
            self.need = Need("first_image", size=MINIGPT_SIZE)
            self.options["tokens"] = (MINIGPT_SIZE // 14) ** 2  # every patch token
        try:
            if w.source == "tiny":
                self.model = seeded(lambda: timm.create_model(TIMM_ARCH, pretrained=False, **TINY_ARGS, **size))
                self.identity = {"init": f"timm default init, torch seed {TINY_SEED}",
                                 "config": TINY_ARGS, "config_sha": config_hash(TINY_ARGS)}
            elif w.source == "local":
                self.model = timm.create_model(f"local-dir:{w.location}", pretrained=True, num_classes=0, **size)
                self.identity = {"sha256": hash_files(w.location)}
            else:
                repo = w.location if "/" in w.location else f"timm/{w.location}"
                self.identity = check_hub(self.name, repo)
                name = f"hf-hub:{w.location}" if "/" in w.location else w.location
                self.model = timm.create_model(name, pretrained=True, num_classes=0, **size)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise unavailable(self.name, w.location or w.tag, str(exc).splitlines()[0][:200]) from exc
        self.model.eval().requires_grad_(False).to(self.torch_device())
        cfg = getattr(self.model, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", _CLIP_MEAN))
        self.std = tuple(cfg.get("std", _CLIP_STD))
        self.image_size = int(self.model.patch_embed.img_size[0])
        self.grid = tuple(int(g) for g in self.model.patch_embed.grid_size)
        self.dim = self.token_dim = int(self.model.embed_dim)
        n_patches = self.grid[0] * self.grid[1]
        tokens = min(self.options["tokens"], n_patches)
        side = math.isqrt(tokens)
        if side * side != tokens:
            from featurestore.errors import InputError

            raise InputError(f"--tokens eva={tokens}: must be a square number (e.g. 256, 64, 16)")
        self.options["tokens"] = tokens
        self.token_side = side

    def _describe(self) -> dict[str, Any]:
        if self.options["layout"] == "minigptv2":
            return {"architecture": f"timm.Eva ({TIMM_ARCH}, img_size {self.image_size})",
                    "preprocessing": {"frame": "first", "size": self.image_size,
                                      "resize": "squash to a square, bicubic", "mean": self.mean, "std": self.std},
                    "layer": f"output of block {len(self.model.blocks) - 1} of {len(self.model.blocks)} "
                             "(the last dropped, as BLIP-2 / MiniGPT-v2)",
                    "pooling": "CLS token after ln_vision (LayerNorm, no affine, eps 1e-5)",
                    "tokens": f"all {self.grid[0] * self.grid[1]} patch tokens after ln_vision"}
        return {"architecture": f"timm.Eva ({TIMM_ARCH})",
                "preprocessing": {"size": self.image_size, "resize": "short side, bicubic",
                                  "crop": "centre", "mean": self.mean, "std": self.std},
                "pooling": "CLS token of the last layer (after norm)",
                "tokens": f"patch tokens average-pooled over the {self.grid[0]}x{self.grid[1]} grid "
                          f"to {self.token_side}x{self.token_side}"}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        if self.options["layout"] == "minigptv2":
            return self._encode_minigpt(inputs)
        return self._encode_pooled(inputs)

    def _encode_minigpt(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import torch
        import torch.nn.functional as F

        pixels = to_pixels(np.stack(inputs), self.image_size, self.mean, self.std, self.torch_device())
        second_last = len(self.model.blocks) - 2
        with torch.inference_mode(), self.autocast():
            (patches, prefix), = self.model.forward_intermediates(
                pixels, indices=[second_last], return_prefix_tokens=True, norm=False,
                output_fmt="NLC", intermediates_only=True)  # (B, N, D), (B, 1, D)
        hidden = torch.cat([prefix, patches], 1).float()  # (B, 1+N, D)
        normed = F.layer_norm(hidden, hidden.shape[-1:], eps=LN_VISION_EPS)  # ln_vision
        return [Encoded(h[0].cpu().numpy(), h[1:].cpu().numpy()) for h in normed]

    def _encode_pooled(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import torch
        import torch.nn.functional as F

        pixels = to_pixels(np.stack(inputs), self.image_size, self.mean, self.std, self.torch_device())
        with torch.inference_mode(), self.autocast():
            hidden = self.model.forward_features(pixels)  # (B, P+N, D)
        hidden = hidden.float()
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        cls = hidden[:, 0]  # (B, D)
        patches = hidden[:, prefix:]  # (B, N, D)
        b, n, d = patches.shape
        grid = patches.transpose(1, 2).reshape(b, d, *self.grid)  # (B, D, gh, gw)
        pooled = F.adaptive_avg_pool2d(grid, self.token_side)  # (B, D, s, s)
        tokens = pooled.flatten(2).transpose(1, 2)  # (B, T, D)
        return [Encoded(c, t) for c, t in zip(cls.cpu().numpy(), tokens.cpu().numpy())]


def save_tiny(directory: str | Path) -> Path:
    """Save the tiny EVA with timm's ``save_for_hf`` (loadable as ``eva:<directory>``)."""
    import timm
    from timm.models import save_for_hf

    model = seeded(lambda: timm.create_model(TIMM_ARCH, pretrained=False, **TINY_ARGS))
    save_for_hf(model, str(directory), model_args=TINY_ARGS, safe_serialization=True)
    return Path(directory)
