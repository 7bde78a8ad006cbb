"""LoRA-tuned LLaMA with projected modality tokens, trained from cached features."""

__all__: list[str] = []
