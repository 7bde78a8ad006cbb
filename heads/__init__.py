"""Projector and fusion heads trained from cached tensors (Lightning)."""

__all__: list[str] = []
