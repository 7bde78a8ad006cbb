"""Shared image helpers: uint8 crops -> normalised pixel tensors on the device."""

from __future__ import annotations

import numpy as np

__all__ = ["to_pixels", "IMAGENET_MEAN", "IMAGENET_STD"]

#: Normalisation of the ImageNet-pretrained ViT-MAE and VideoMAE checkpoints.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def to_pixels(images: np.ndarray, size: int, mean, std, device):
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, size, size)`` float32, normalised."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.reshape(*lead, 3, size, size)
