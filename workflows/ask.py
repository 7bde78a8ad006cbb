"""`emofs llm ask`: the LLM's answer for a clip of the store or a new media file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from extractors import extract_file
from featurestore.errors import InputError
from featurestore.store import Store, sql_quote
from llm import ask as ask_clip
from llm.model import EmotionLLM

__all__ = ["ask", "check_target"]


def check_target(target: str) -> None:
    """Refuse an empty target (``emofs llm ask ""``) before it reads as the current folder.

    Raises:
        InputError: ``target`` is empty or blank.
    """
    if not str(target).strip():
        raise InputError("TARGET is empty: pass a clip_id from `emofs clips` or the path of a "
                         "video/audio file")


def ask(
    run_dir: str | Path,
    target: str,
    store: Store,
    *,
    question: str | None = None,
    task: str = "emotion",
    subtitle: str | None = None,
    max_new_tokens: int | None = None,
    model: EmotionLLM | None = None,
) -> dict[str, Any]:
    """Answer one clip id of the store, or one media file (extracted on the fly).

    A file not in the store is extracted with the store's specs of the run's feature sets
    (nothing is stored). Arguments and result as :func:`llm.ask`.
    """
    check_target(target)
    known = store.exists() and store.clips(where=f"clip_id = {sql_quote(target)}",
                                           columns=["clip_id"]).height > 0
    extracted = None
    if not known:
        path = Path(target).expanduser()
        if not path.is_file():
            raise InputError(
                f"{target!r} is neither a clip id in {store.uri} nor a media file: "
                "pass a clip_id from `emofs clips` or the path of a video/audio file")
        model = model or EmotionLLM.load(run_dir)
        cfg = model.config
        names = list(dict.fromkeys([*cfg.feature_encoders, *([cfg.video_encoder] if cfg.video_encoder else [])]))
        extracted = extract_file(path, names, store, subtitle=subtitle)
    return ask_clip(run_dir, target, store, question=question, task=task, subtitle=subtitle,
                    max_new_tokens=max_new_tokens, model=model, extracted=extracted)
