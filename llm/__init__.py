"""LoRA-tuned causal LM (LLaMA family, or the built-in Gemma 3 270M) with projected
modality tokens, trained from cached features.

Heavy libraries (torch, transformers, peft, lightning) are imported inside functions, so
``import llm`` stays cheap.
"""

from .config import LLMConfig, parse_tasks
from .generate import answer_to_label, ask, evaluate
from .train import train

__all__ = ["LLMConfig", "parse_tasks", "train", "ask", "evaluate", "answer_to_label"]
