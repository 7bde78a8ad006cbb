"""A tiny LLaMA or Gemma 3 + tokenizer built offline (random weights) for tests and demos.

The tokenizer is a small BPE trained with ``tokenizers`` on the prompt vocabulary, the
label words and any extra text; the model is a ``LlamaForCausalLM`` from a small
``LlamaConfig`` or a ``Gemma3ForCausalLM`` from a small ``Gemma3TextConfig`` (the
architecture of ``--base gemma3-270m``, with Gemma's special tokens ``<start_of_turn>`` /
``<end_of_turn>``). Both are saved with ``save_pretrained`` so they load by path through
the same code as a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from featurestore.errors import InputError

from .bases import quiet_transformers

if TYPE_CHECKING:
    from featurestore.store import Store

__all__ = ["build_tiny_llama", "build_tiny_gemma", "vocabulary_from_store", "TINY_CHAT_TEMPLATE",
           "GEMMA_CHAT_TEMPLATE"]

# A minimal chat template (different from the [INST] fallback, so tests can tell them apart).
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}"
    "{% else %} ASSISTANT: {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
#: Gemma's turn format as a chat template (the instruction-tuned Gemma's, without system turns).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
_GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
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
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    fast = _saved_tokenizer(out, labels, extra_text, _SPECIAL, vocab_size,
                            TINY_CHAT_TEMPLATE if chat_template else None,
                            unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
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
    return _saved_model(out, LlamaForCausalLM(config))


def _saved_tokenizer(out: Path, labels: Sequence[str], extra_text: Iterable[str], special: list[str],
                     vocab_size: int, chat_template: str | None, **tokens):
    """:func:`_tokenizer` with its chat template (None: none), saved into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    fast = _tokenizer(labels, extra_text, special, vocab_size, **tokens)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(out)
    return fast


def _saved_model(out: Path, model) -> Path:
    """Save a freshly built tiny model beside its tokenizer; returns ``out``."""
    with quiet_transformers():
        model.save_pretrained(out)
    return out


def _tokenizer(labels: Sequence[str], extra_text: Iterable[str], special: list[str], vocab_size: int, **tokens):
    """A small BPE (Metaspace) trained on the prompt vocabulary, labels and extra text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .prompts import prompt_vocabulary

    corpus = [*prompt_vocabulary(labels), *labels, *[str(t) for t in extra_text]]
    corpus += ["<video> </video> <feature> </feature> <VideoHere> <FeatureHere> user model"]
    corpus += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()[]-_<>/\n")
    tok = Tokenizer(models.BPE(unk_token=tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    extra = [t for t in special if t not in tokens.values()]
    return PreTrainedTokenizerFast(tokenizer_object=tok, additional_special_tokens=extra or None, **tokens)


def build_tiny_gemma(
    out_dir: str | Path,
    labels: Sequence[str],
    *,
    extra_text: Iterable[str] = (),
    chat_template: bool = False,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 600,
    seed: int = 0,
) -> Path:
    """A tiny random ``Gemma3ForCausalLM`` + tokenizer with Gemma's special tokens, saved to ``out_dir``.

    Args:
        out_dir: folder to write (``config.json``, weights, tokenizer files).
        labels: label words the tokenizer must know.
        extra_text: more sentences for the tokenizer.
        chat_template: give the tokenizer Gemma's chat template; without one (as
            ``gemma3-270m``, a base model) the model type picks Gemma's turns.
        hidden_size, layers, heads, vocab_size: model size (one key/value head, as Gemma 3 270M).
        seed: torch seed of the random weights.

    Returns:
        ``out_dir`` as a Path.
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = Path(out_dir)
    fast = _saved_tokenizer(out, labels, extra_text, _GEMMA_SPECIAL, vocab_size,
                            GEMMA_CHAT_TEMPLATE if chat_template else None,
                            unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=1,
        head_dim=hidden_size // heads,
        max_position_embeddings=1024,
        sliding_window=64,
        bos_token_id=fast.bos_token_id,
        eos_token_id=[fast.eos_token_id, fast.convert_tokens_to_ids("<end_of_turn>")],
        pad_token_id=fast.pad_token_id,
    )
    return _saved_model(out, Gemma3ForCausalLM(config))
