"""Shared image helpers: uint8 crops -> normalised pixel tensors on the device."""

from __future__ import annotations

import numpy as np

__all__ = ["to_pixels", "to_video_pixels", "IMAGENET_MEAN", "IMAGENET_STD"]

#: Normalisation of the ImageNet-pretrained ViT-MAE and VideoMAE checkpoints.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def to_pixels(images: np.ndarray, size: int, mean, std, device):
    """``(..., H, W, 3)`` uint8 -> ``(..., 3, size, size)`` float32, normalised.

    The uint8 images go to the device as they are (4x less to copy than floats); the
    conversion and ``(x / 255 - mean) / std`` then run as one copy and two in-place ops.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8 view
    pixels = torch.empty(x.shape, dtype=torch.float32, device=device).copy_(x)  # (N, 3, H, W)
    if pixels.shape[-1] != size or pixels.shape[-2] != size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 255)
    std255 = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    mean255 = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    pixels.sub_(mean255).div_(std255)  # == (x / 255 - mean) / std
    return pixels.reshape(*lead, 3, size, size)


def to_video_pixels(clips: np.ndarray, size: int, mean, std, device):
    """``(B, F, H, W, 3)`` uint8 clips -> ``(B, F, 3, size, size)`` float32, normalised, as a
    view over channel-first ``(B, 3, F, size, size)`` memory.

    Video models (VideoMAE's tubelet ``Conv3d``) permute their input to ``(B, 3, F, S, S)``;
    a frame-first tensor would be copied there whole (one more float copy of the batch, the
    largest buffer of a video forward). With this layout the permute gives back a contiguous
    tensor: same values, one float copy less.
    """
    import torch

    if clips.shape[-3] != size or clips.shape[-2] != size:  # resizing runs per frame
        return to_pixels(clips, size, mean, std, device)  # (B, F, 3, S, S)
    x = torch.from_numpy(np.ascontiguousarray(clips)).to(device).permute(0, 4, 1, 2, 3)  # (B, 3, F, S, S) uint8 view
    pixels = torch.empty(x.shape, dtype=torch.float32, device=device).copy_(x)  # (B, 3, F, S, S)
    std255 = torch.tensor(std, device=device).view(1, 3, 1, 1, 1) * 255.0
    mean255 = torch.tensor(mean, device=device).view(1, 3, 1, 1, 1) * 255.0
    pixels.sub_(mean255).div_(std255)  # == (x / 255 - mean) / std
    return pixels.transpose(1, 2)  # (B, F, 3, S, S) view
