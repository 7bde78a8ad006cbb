"""Emotion-LLaMA's prompt and task instructions.

The user turn, as in Emotion-LLaMA's ``FeatureFaceDataset``::

    <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says:
    {subtitle}. [task] {instruction}

``<VideoHere>`` is replaced by the projected EVA patch tokens and ``<FeatureHere>`` by one
projected token per encoder vector. A modality a clip lacks is left out and the prompt
says which. The turn is wrapped in the tokenizer's chat template when it has one, else in
LLaMA-2's ``[INST] ... [/INST]``.
"""

from __future__ import annotations

import random
from typing import Sequence

__all__ = [
    "VIDEO_PLACEHOLDER",
    "FEATURE_PLACEHOLDER",
    "REASON_INSTRUCTIONS",
    "EMOTION_INSTRUCTION",
    "INFER_PREFIX",
    "emotion_instruction",
    "user_prompt",
    "answer_text",
    "pick_instruction",
    "wrap_chat",
    "prompt_vocabulary",
]

VIDEO_PLACEHOLDER = "<VideoHere>"
FEATURE_PLACEHOLDER = "<FeatureHere>"

EMOTION_INSTRUCTION = "Please determine which emotion label in the video represents: {labels}."

# The reasoning phrasings of Emotion-LLaMA (minigpt4/datasets/datasets/first_face.py).
REASON_INSTRUCTIONS = (
    "Please analyze all the clues in the video and reason out the emotional label of the person in the video.",
    "What is the emotional state of the person in the video? Please tell me the reason.",
    "What are the facial expressions and vocal tone used in the video? What is the intended "
    "meaning behind his words? Which emotion does this reflect?",
    "Please integrate information from various modalities to infer the emotional category of the person in the video.",
    "Could you describe the emotion-related features of the individual in the video? What "
    "emotional category do they fall into?",
)

# Emotion-LLaMA appends the label to a reasoning answer after this sentence.
INFER_PREFIX = "Therefore, it is inferred that his emotional state is:"


def emotion_instruction(labels: Sequence[str]) -> str:
    """The recognition instruction listing the label set."""
    return EMOTION_INSTRUCTION.format(labels=", ".join(labels))


def user_prompt(
    task: str,
    instruction: str,
    subtitle: str | None,
    *,
    has_video: bool,
    present_features: Sequence[str],
    missing: Sequence[str] = (),
) -> str:
    """The user turn with ``<VideoHere>`` / ``<FeatureHere>`` placeholders.

    Args:
        task: ``emotion`` or ``reason`` (shown as ``[task]``).
        instruction: the task instruction.
        subtitle: what the person says (None / empty: the prompt says there is none).
        has_video: whether video tokens follow ``<VideoHere>``.
        present_features: encoders whose tokens fill ``<FeatureHere>`` (none: no placeholder).
        missing: encoders this clip has no features for (named in the prompt).
    """
    video = f"<video>{VIDEO_PLACEHOLDER}</video>" if has_video else "<video></video>"
    feature = f"<feature>{FEATURE_PLACEHOLDER}</feature>" if present_features else "<feature></feature>"
    parts = [video, feature]
    if missing:
        parts.append(f"(missing modalities: {', '.join(missing)})")
    text = (subtitle or "").strip().rstrip(".")
    parts.append(f"The person in video says: {text}." if text else "The person in video says nothing.")
    parts.append(f"[{task}] {instruction}")
    return " ".join(parts)


def answer_text(task: str, label: str | None, description: str | None) -> str | None:
    """The target answer of one clip for one task (None: the clip cannot serve the task)."""
    if task == "emotion":
        return label or None
    if task == "reason":
        if not description or not description.strip():
            return None
        text = description.strip()
        return f"{text} {INFER_PREFIX} {label}." if label else text
    raise ValueError(task)


def pick_instruction(task: str, labels: Sequence[str], rng: random.Random | None = None) -> str:
    """An instruction for ``task`` (a random reasoning phrasing when ``rng`` is given)."""
    if task == "emotion":
        return emotion_instruction(labels)
    if rng is None:
        return REASON_INSTRUCTIONS[0]
    return rng.choice(REASON_INSTRUCTIONS)


def wrap_chat(tokenizer, user: str) -> tuple[str, bool]:
    """Wrap a user turn for generation; returns ``(text, text_has_bos)``.

    Uses the tokenizer's chat template when it has one, else ``[INST] user [/INST]``
    (LLaMA-2 / Emotion-LLaMA) with the BOS token added by the caller.
    """
    template = getattr(tokenizer, "chat_template", None)
    if template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        bos = tokenizer.bos_token
        return text, bool(bos) and text.startswith(bos)
    return f"[INST] {user} [/INST]", False


def prompt_vocabulary(labels: Sequence[str]) -> list[str]:
    """Sentences covering the prompt's fixed words (to train a tiny offline tokenizer)."""
    lines = [
        user_prompt("emotion", emotion_instruction(labels), "It is eleven o'clock",
                    has_video=True, present_features=["x"], missing=["hubert", "mae"]),
        user_prompt("reason", REASON_INSTRUCTIONS[0], None, has_video=False, present_features=[]),
        *REASON_INSTRUCTIONS,
        f"{INFER_PREFIX} " + ", ".join(labels),
        "[INST] [/INST] USER: ASSISTANT:",
    ]
    return lines
