"""Which modules of a base LM get LoRA adapters, found from its architecture.

The paper adapts LLaMA's ``q_proj`` and ``v_proj``. Other bases name their attention
projections differently (GPT-2 ``c_attn``, Falcon / GPT-NeoX ``query_key_value``, BERT-like
``query`` / ``value``), so ``--lora-targets auto`` looks inside the base's attention
modules: a fused QKV projection when there is one, else the query and value projections.
``--lora-targets attention`` takes every linear projection of the attention modules
(Gemma 3 and LLaMA: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``).
"""

from __future__ import annotations

import re
from typing import Sequence

from featurestore.errors import InputError

__all__ = ["attention_projections", "lora_targets"]

_FUSED = ("qkv_proj", "c_attn", "query_key_value", "Wqkv", "qkv", "W_pack")
_QUERY = re.compile(r"^(q|query)(_proj)?$")
_VALUE = re.compile(r"^(v|value)(_proj)?$")
_ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")


def _is_projection(module) -> bool:
    import torch

    # transformers' Conv1D (GPT-2) is a linear layer with transposed weights.
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def attention_projections(model) -> list[str]:
    """Names of the linear layers directly inside the model's attention modules.

    Args:
        model: a transformers model (or any ``torch.nn.Module``).

    Returns:
        Child names in first-seen order, e.g. ``["q_proj", "k_proj", "v_proj", "o_proj"]``.
    """
    names: list[str] = []
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if "attention" not in type(module).__name__.lower() and leaf not in _ATTENTION_NAMES:
            continue
        for child_name, child in module.named_children():
            if _is_projection(child) and child_name not in names:
                names.append(child_name)
    return names


def lora_targets(model, requested: Sequence[str], base: str) -> list[str]:
    """Resolve ``--lora-targets`` against a loaded base.

    Args:
        model: the base LM.
        requested: module names, or one keyword: ``auto`` (fused QKV, else query + value
            projections) or ``attention`` (every attention projection).
        base: the ``--base`` text (for messages).

    Returns:
        Module names for PEFT's ``target_modules``.

    Raises:
        InputError: a named module the base lacks, or no attention projection found.
    """
    found = attention_projections(model)
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_projection(m)})
    requested = list(requested)
    if requested in (["auto"], ["attention"]):
        if requested == ["auto"]:
            fused = [n for n in found if n in _FUSED]
            picked = fused or [n for n in found if _QUERY.match(n) or _VALUE.match(n)]
        else:
            picked = found
        if not picked:
            raise InputError(
                f"--lora-targets {requested[0]}: found no attention projections in {base} "
                f"(linear modules: {', '.join(linear)}): name them, e.g. --lora-targets {','.join(linear[:2])}"
            )
        return picked
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    absent = [t for t in requested if t not in names]
    if absent:
        raise InputError(
            f"--lora-targets {','.join(absent)} not found in {base} (linear modules: {', '.join(linear)}; "
            "or pass --lora-targets auto)"
        )
    return requested
