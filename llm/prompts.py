"""Emotion-LLaMA's prompt and task instructions.

The user turn, as in Emotion-LLaMA's ``FeatureFaceDataset``::

    <video><VideoHere></video> <feature><FeatureHere></feature> The person in video says:
    {subtitle}. [task] {instruction}

``<VideoHere>`` is replaced by the projected EVA patch tokens and ``<FeatureHere>`` by one
projected token per encoder vector. A modality a clip lacks is left out and the prompt
says which. The turn is wrapped in the tokenizer's chat template when it has one, else by
the base's model type: Gemma's turns (``<start_of_turn>user\n ... <end_of_turn>\n
<start_of_turn>model\n``) for a Gemma, LLaMA-2's ``[INST] ... [/INST]`` otherwise
(:func:`chat_format`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
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
    "chat_format",
    "ChatFormat",
    "GEMMA_MODEL_TYPES",
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
    style: str = "emofs",
) -> str:
    """The user turn with ``<VideoHere>`` / ``<FeatureHere>`` placeholders.

    Args:
        task: ``emotion`` or ``reason`` (shown as ``[task]``).
        instruction: the task instruction.
        subtitle: what the person says (None / empty: the prompt says there is none).
        has_video: whether video tokens follow ``<VideoHere>``.
        present_features: encoders whose tokens fill ``<FeatureHere>`` (none: no placeholder).
        missing: encoders this clip has no features for (named in the prompt).
        style: ``emofs``, or ``emotion-llama``: the released model's text to the space
            (``FeatureFaceDataset``: ``"... says: {s}.  [task] {instruction} "``).
    """
    video = f"<video>{VIDEO_PLACEHOLDER}</video>" if has_video else "<video></video>"
    feature = f"<feature>{FEATURE_PLACEHOLDER}</feature>" if present_features else "<feature></feature>"
    parts = [video, feature]
    if missing:
        parts.append(f"(missing modalities: {', '.join(missing)})")
    text = (subtitle or "").strip().rstrip(".")
    says = f"The person in video says: {text}." if text else "The person in video says nothing."
    if style == "emotion-llama":  # its character line ends in ". " and the turn in " "
        return " ".join(parts) + f" {says}  [{task}] {instruction} "
    parts.append(says)
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


#: transformers model types that take Gemma's turn format when the tokenizer has no template.
GEMMA_MODEL_TYPES = ("gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "gemma3n_text")
GEMMA_END_OF_TURN = "<end_of_turn>"
_PROBE = "ANSWER-PROBE-7"


@dataclass(frozen=True)
class ChatFormat:
    """How a base wants its turn: the name, the answer's lead text and its end token.

    Attributes:
        name: ``template`` (the tokenizer's chat template), ``gemma`` (Gemma's turns) or
            ``inst`` (LLaMA-2 / Emotion-LLaMA ``[INST] ... [/INST]``).
        answer_prefix: text put before the answer (``" "`` after ``[/INST]``; ``""`` after
            Gemma's ``model\n``).
        end_token: the token closing an answer (trained on, and a stop token besides EOS);
            None: the tokenizer's EOS.
    """

    name: str
    answer_prefix: str = " "
    end_token: str | None = None


def _has_token(tokenizer, token: str) -> bool:
    ids = tokenizer.convert_tokens_to_ids([token])
    return bool(ids) and ids[0] is not None and ids[0] != tokenizer.unk_token_id


def _template_end_token(tokenizer) -> str | None:
    """The special token a chat template puts right after an assistant answer (None: EOS)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _PROBE}], tokenize=False)
    except Exception:  # a template that refuses this shape: fall back to EOS
        return None
    _, _, after = text.partition(_PROBE)
    special = set(tokenizer.all_special_ids)
    for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            token = tokenizer.convert_ids_to_tokens(token_id)
            return None if token == tokenizer.eos_token else token
        if tokenizer.decode([token_id]).strip():
            break  # plain text before any special token: no end token to learn
    return None


def chat_format(tokenizer, model_type: str | None = None) -> ChatFormat:
    """The turn format of a base: its chat template, else Gemma's turns, else ``[INST]``.

    Args:
        tokenizer: the base's tokenizer.
        model_type: the base's ``config.model_type`` (picks Gemma's turns without a template).
    """
    if getattr(tokenizer, "chat_template", None):
        text, _ = _render_template(tokenizer, "Q")
        return ChatFormat("template", "" if text.endswith("\n") else " ", _template_end_token(tokenizer))
    if (model_type or "") in GEMMA_MODEL_TYPES:
        end = GEMMA_END_OF_TURN if _has_token(tokenizer, GEMMA_END_OF_TURN) else None
        return ChatFormat("gemma", "", end)
    return ChatFormat("inst", " ", None)


def _render_template(tokenizer, user: str) -> tuple[str, bool]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    return text, bool(bos) and text.startswith(bos)


def wrap_chat(tokenizer, user: str, model_type: str | None = None,
              fmt: ChatFormat | None = None) -> tuple[str, bool]:
    """Wrap a user turn for generation; returns ``(text, text_has_bos)``.

    Uses ``fmt`` when given (a model's format, decided once), else :func:`chat_format`: the
    tokenizer's chat template when it has one, else Gemma's turns for a Gemma
    ``model_type``, else ``[INST] user [/INST]`` (LLaMA-2 / Emotion-LLaMA); the caller adds
    the BOS token when the text lacks it.
    """
    name = (fmt or chat_format(tokenizer, model_type)).name
    if name == "template":
        return _render_template(tokenizer, user)
    if name == "gemma":
        return f"<start_of_turn>user\n{user}{GEMMA_END_OF_TURN}\n<start_of_turn>model\n", False
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
