"""A tiny LLaMA + tokenizer built offline (random weights) for tests and the demo.

The tokenizer is a small BPE trained with ``tokenizers`` on the prompt vocabulary, the
label words and any extra text; the model is a ``LlamaForCausalLM`` from a small
``LlamaConfig``. Both are saved with ``save_pretrained`` so they load by path through the
same code as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from featurestore.errors import InputError

if TYPE_CHECKING:
    from featurestore.store import Store

__all__ = ["build_tiny_llama", "vocabulary_from_store", "TINY_CHAT_TEMPLATE"]

# A minimal chat template (different from the [INST] fallback, so tests can tell them apart).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}"
    "{% else %} ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
#: Clip columns whose texts the tiny tokenizer learns (besides the label words).
_TEXT_COLUMNS = ("subtitle", "description")


def vocabulary_from_store(store: Store, labels: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The label words and the texts a tiny tokenizer for ``store`` should know.

    Args:
        store: the store whose clips are read (label, subtitle and description columns).
        labels: label words to use; empty takes the store's distinct labels (sorted).

    Returns:
        ``(words, texts)``: the label words, and the distinct non-empty subtitles and
        descriptions of the clips (for :func:`build_tiny_llama`'s ``extra_text``).

    Raises:
        InputError: no label words (none given and no labelled clip in the store).
    """
    frame = store.clips(columns=["label", *_TEXT_COLUMNS])
    words = list(labels) or sorted({x for x in frame["label"].to_list() if x})
    if not words:
        raise InputError("no label words: pass --labels happy,sad,... or a --store with labelled clips")
    texts = [x for c in _TEXT_COLUMNS for x in dict.fromkeys(frame[c].to_list()) if x]
    return words, texts


def build_tiny_llama(
    out_dir: str | Path,
    labels: Sequence[str],
    *,
    extra_text: Iterable[str] = (),
    chat_template: bool = True,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 600,
    seed: int = 0,
) -> Path:
    """Train a tiny tokenizer, build a random tiny LLaMA, save both to ``out_dir``.

    Args:
        out_dir: folder to write (``config.json``, weights, tokenizer files).
        labels: label words the tokenizer must know.
        extra_text: more sentences for the tokenizer (subtitles, descriptions).
        chat_template: give the tokenizer a chat template (else ``[INST]`` fallback).
        hidden_size, layers, heads, vocab_size: model size.
        seed: torch seed of the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .prompts import prompt_vocabulary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [*prompt_vocabulary(labels), *labels, *[str(t) for t in extra_text]]
    corpus += ["<video> </video> <feature> </feature> <VideoHere> <FeatureHere>"]
    corpus += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()[]-_<>/")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIAL, show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if chat_template:
        fast.chat_template = TINY_CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return out
