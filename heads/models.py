"""Projectors, fusion and classifier (plain torch; the Lightning wrapper is in ``train``).

Per modality a projector (Emotion-LLaMA: ``Linear(D, 4096)``; width ``hidden``) maps the
cached vector to a shared width; fusion is ``concat`` (projections side by side) or
``attention`` (softmax weights over modalities computed from all of them, as the MER
baselines' attention fusion); a dropout + linear classifier gives the class logits.

Missing modalities: ``fuse`` / ``forward`` take an optional presence mask ``(B, M)`` (True:
the clip has that feature set). A missing modality's slot never reaches the output: its
projection is zeroed before fusion; ``concat`` scales the present projections by
``M / present`` (as inverted dropout, so a clip with every modality is fused exactly as
without a mask) and ``attention`` takes its softmax over the present modalities only. The
linear head zero-fills a missing modality's standardised input (its training mean).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["FusionHead", "LinearHead", "build_head", "drop_modalities"]


def _mask(present: torch.Tensor | None, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The presence mask as ``(B, M)`` bool (None: every modality present)."""
    if present is None:
        return torch.ones(len(inputs[0]), len(inputs), dtype=torch.bool, device=inputs[0].device)
    present = present.to(torch.bool)
    if present.shape != (len(inputs[0]), len(inputs)):
        raise ValueError(f"presence mask must be (B, M) = ({len(inputs[0])}, {len(inputs)}), got {tuple(present.shape)}")
    return present


def drop_modalities(present: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Modality dropout: hide each present modality with chance ``p``; one always stays.

    Args:
        present: ``(B, M)`` bool presence mask.
        p: drop chance per modality.
        generator: random source (None: torch's global one).

    Returns:
        ``(B, M)`` bool mask, a subset of ``present`` with at least one True per row that
        had one (a row left empty keeps one of its modalities, chosen at random).
    """
    if p <= 0 or present.shape[1] < 2:
        return present
    draw = torch.rand(present.shape, generator=generator, device=present.device)  # (B, M)
    kept = present & (draw >= p)
    empty = ~kept.any(1) & present.any(1)  # (B,)
    if empty.any():
        pick = (torch.rand(present.shape, generator=generator, device=present.device) * present).argmax(1)  # (B,)
        one = torch.nn.functional.one_hot(pick, present.shape[1]).to(torch.bool)  # (B, M)
        kept = torch.where(empty.unsqueeze(1), one & present, kept)
    return kept


class FusionHead(nn.Module):
    """Multimodal emotion classifier over cached vectors.

    Args:
        dims: input width of each modality, in a fixed order.
        n_classes: vocabulary size.
        hidden: projector width.
        fusion: ``"concat"`` or ``"attention"``.
        dropout: dropout on the projected features.
    """

    def __init__(self, dims: Sequence[int], n_classes: int, *, hidden: int = 256,
                 fusion: str = "concat", dropout: float = 0.2):
        super().__init__()
        if fusion not in ("concat", "attention"):
            raise ValueError(f"unknown fusion {fusion!r}")
        self.fusion = fusion
        self.n_modalities = len(dims)
        self.projectors = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        # Per-modality input standardisation (train-set mean / std; identity until set).
        for m, d in enumerate(dims):
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        if fusion == "attention":
            m = self.n_modalities
            # Scores from every modality together -> one weight per modality.
            self.attention = nn.Sequential(nn.Linear(m * hidden, hidden), nn.ReLU(), nn.Linear(hidden, m))
            fused = hidden
        else:
            fused = hidden * self.n_modalities
        self.classifier = nn.Linear(fused, n_classes)

    def set_standardization(self, stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Store per-modality ``(mean (D,), std (D,))`` of the training inputs."""
        for m, (mean, std) in enumerate(stats):
            getattr(self, f"mean_{m}").copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(self, f"std_{m}").copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def fuse(self, inputs: Sequence[torch.Tensor], present: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Project and fuse the present modalities.

        Args:
            inputs: one ``(B, D_m)`` tensor per modality (a missing one's values are ignored).
            present: ``(B, M)`` bool presence mask; None: every modality present.

        Returns:
            ``(fused (B, F), modality weights (B, M) or None)``; weights of missing
            modalities are 0.
        """
        mask = _mask(present, inputs)  # (B, M)
        projected = [
            torch.where(mask[:, m : m + 1],
                        self.act(p((x.float() - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}"))), 0.0)
            for m, (p, x) in enumerate(zip(self.projectors, inputs))
        ]  # M x (B, H); zeros where missing
        if self.fusion == "concat":
            scale = self.n_modalities / mask.sum(1, keepdim=True).clamp_min(1)  # (B, 1); 1 when all present
            return torch.cat(projected, dim=-1) * scale, None  # (B, M*H)
        stacked = torch.stack(projected, dim=1)  # (B, M, H)
        scores = self.attention(stacked.flatten(1))  # (B, M)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask  # (B, M)
        return (weights.unsqueeze(-1) * stacked).sum(dim=1), weights  # (B, H), (B, M)

    def forward(self, inputs: Sequence[torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(B, C)`` from one ``(B, D_m)`` tensor per modality and an optional
        ``(B, M)`` presence mask."""
        if len(inputs) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} modalities, got {len(inputs)}")
        fused, _ = self.fuse(inputs, present)
        return self.classifier(self.dropout(fused))  # (B, C)


class LinearHead(nn.Module):
    """Multinomial logistic regression over the standardised, concatenated inputs.

    Same interface as :class:`FusionHead` (``fuse``, ``classifier``, standardisation
    buffers), so runs load and predict alike; trained full-batch by :mod:`heads.linear`.
    """

    def __init__(self, dims: Sequence[int], n_classes: int):
        super().__init__()
        self.n_modalities = len(dims)
        for m, d in enumerate(dims):
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))
        self.classifier = nn.Linear(sum(dims), n_classes)

    set_standardization = FusionHead.set_standardization

    def fuse(self, inputs: Sequence[torch.Tensor], present: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, None]:
        """Standardised inputs side by side: ``(B, sum D_m)`` (no modality weights); a
        missing modality's block is 0 (its training mean)."""
        mask = _mask(present, inputs)  # (B, M)
        return torch.cat([torch.where(mask[:, m : m + 1],
                                      (x.float() - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}"), 0.0)
                          for m, x in enumerate(inputs)], dim=-1), None  # (B, sum D_m)

    def forward(self, inputs: Sequence[torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits ``(B, C)``."""
        return self.classifier(self.fuse(inputs, present)[0])  # (B, C)


def build_head(dims: Sequence[int], n_classes: int, cfg) -> nn.Module:
    """A :class:`FusionHead` (or :class:`LinearHead` for ``head="linear"``) from a
    :class:`heads.config.HeadConfig`."""
    if getattr(cfg, "head", "mlp") == "linear":
        return LinearHead(dims, n_classes)
    return FusionHead(dims, n_classes, hidden=cfg.hidden, fusion=cfg.fusion, dropout=cfg.dropout)
