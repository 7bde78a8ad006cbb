"""A causal LM with LoRA and per-encoder projectors whose outputs are spliced into the prompt.

Each example's user turn is split at ``<VideoHere>`` / ``<FeatureHere>``; text pieces go
through the LM's token embeddings, the video tokens through the video projector
(``m*Dt -> H``) and each encoder vector through its own projector (``D -> H``). The pieces
are concatenated into ``inputs_embeds``; the loss covers the answer tokens only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from featurestore.errors import InputError

from .config import LLMConfig
from .prompts import FEATURE_PLACEHOLDER, VIDEO_PLACEHOLDER, wrap_chat

__all__ = ["EmotionLLM", "load_base", "resolve_dtype", "VIDEO_KEY"]

VIDEO_KEY = "video"  # projector name of the <VideoHere> tokens
_SPLIT = re.compile(f"({re.escape(VIDEO_PLACEHOLDER)}|{re.escape(FEATURE_PLACEHOLDER)})")
IGNORE = -100


def resolve_dtype(precision: str):
    """Weights dtype of the base LM for a ``--precision`` (fp32 on CPU)."""
    import torch

    if precision == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}[precision]


def load_base(base: str, dtype=None):
    """Load a causal LM and its tokenizer by hub id or local directory.

    Raises:
        InputError: the model or tokenizer cannot be loaded (says what to pass instead).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"cannot load --base {base!r} ({str(exc).strip().splitlines()[0][:200]}): pass a local "
            "directory holding a causal LM and its tokenizer (save_pretrained), or a reachable hub id"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


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

    def __init__(self, lm, tokenizer, projectors, config: LLMConfig, dims: dict[str, int]):
        self.lm = lm
        self.tokenizer = tokenizer
        self.projectors = projectors
        self.config = config
        self.dims = dims
        self.labels: list[str] = list(config.labels or [])
        self._text_cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- building
    @classmethod
    def create(cls, config: LLMConfig, dims: dict[str, int], *, device=None) -> "EmotionLLM":
        """Load the base, add LoRA adapters and fresh projectors.

        Args:
            dims: projector input dims: encoder -> D, and ``video`` -> merge * Dt.
        """
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(config.seed)
        model, tokenizer = load_base(config.base, resolve_dtype(config.precision))
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        absent = [t for t in config.target_modules if t not in names]
        if absent:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear)})
            raise InputError(
                f"--lora-targets {','.join(absent)} not found in {config.base} "
                f"(linear modules: {', '.join(linear)})"
            )
        for p in model.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), task_type="CAUSAL_LM")
        lm = get_peft_model(model, lora)
        hidden = model.config.hidden_size
        projectors = torch.nn.ModuleDict({k: torch.nn.Linear(d, hidden) for k, d in dims.items()})
        out = cls(lm, tokenizer, projectors, config, dict(dims))
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
            raise InputError(f"{run} is not an llm run (no config.json): pass the --out folder of `emofs llm train`")
        meta = json.loads(meta_path.read_text())
        config = LLMConfig.from_dict(meta["config"])
        dims = {k: int(v) for k, v in meta["dims"].items()}
        model, tokenizer = load_base(config.base, resolve_dtype(config.precision))
        for p in model.parameters():
            p.requires_grad_(False)
        lm = PeftModel.from_pretrained(model, str(run / "adapter"))
        hidden = model.config.hidden_size
        projectors = torch.nn.ModuleDict({k: torch.nn.Linear(d, hidden) for k, d in dims.items()})
        projectors.load_state_dict(load_file(str(run / "projectors.safetensors")))
        out = cls(lm, tokenizer, projectors, config, dims)
        out.labels = meta.get("labels") or []
        out.eval()
        return out.to(_device(device))

    def save(self, run_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write ``adapter/`` (PEFT, safetensors), ``projectors.safetensors``, ``config.json``."""
        from safetensors.torch import save_file

        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(run / "adapter"), safe_serialization=True)
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.projectors.state_dict().items()}
        save_file(state, str(run / "projectors.safetensors"))
        meta = {"config": self.config.to_dict(), "dims": self.dims,
                "hidden_size": self.lm.get_base_model().config.hidden_size}
        meta.update(extra or {})
        (run / "config.json").write_text(json.dumps(meta, indent=2, default=str))

    def init_projectors(self, source: str | Path) -> None:
        """Copy projector weights from a head run or a projectors file.

        ``source`` is a head run (``emofs heads train`` folder: its best checkpoint's
        per-encoder projectors, with the head's input standardisation folded into the
        weights), an llm run, or a ``.safetensors`` file with ``<encoder>.weight`` /
        ``<encoder>.bias`` keys. Projectors it does not hold keep their fresh init.

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
                proj.weight.copy_(w)
                if f"{name}.bias" in state:
                    proj.bias.copy_(state[f"{name}.bias"])
                copied += 1
        if not copied:
            raise InputError(
                f"--projectors-from {source}: none of the projectors {', '.join(self.projectors)} are there"
            )

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
        """The full model input text of a user prompt (chat template or ``[INST]``)."""
        text, has_bos = wrap_chat(self.tokenizer, prompt)
        bos = self.tokenizer.bos_token
        return text if has_bos or not bos else bos + text

    def _example_embeds(self, example: dict[str, Any], with_answer: bool):
        """``(L, H)`` embeddings and ``(L,)`` labels of one example."""
        import torch

        embed = self.lm.get_input_embeddings()
        dtype = embed.weight.dtype
        device = embed.weight.device
        text = self.render(example["prompt"])
        pieces, labels = [], []
        for part in _SPLIT.split(text):
            if not part:
                continue
            if part == VIDEO_PLACEHOLDER:
                video = torch.as_tensor(example["video"], dtype=torch.float32, device=device)  # (T', m*Dt)
                emb = self.projectors[VIDEO_KEY](video.to(self.projectors[VIDEO_KEY].weight.dtype))  # (T', H)
            elif part == FEATURE_PLACEHOLDER:
                rows = [self.projectors[name](torch.as_tensor(vec, device=device)
                                              .to(self.projectors[name].weight.dtype))
                        for name, vec in example["features"].items()]
                emb = torch.stack(rows)  # (F, H)
            else:
                ids = torch.tensor(self._ids(part), dtype=torch.long, device=device)
                emb = embed(ids)  # (n, H)
            pieces.append(emb.to(dtype))
            labels.append(torch.full((emb.shape[0],), IGNORE, dtype=torch.long, device=device))
        if with_answer:
            ids = self._ids(" " + example["answer"]) + [self.tokenizer.eos_token_id]
            ids_t = torch.tensor(ids, dtype=torch.long, device=device)
            pieces.append(embed(ids_t).to(dtype))
            labels.append(ids_t)
        return torch.cat(pieces), torch.cat(labels)  # (L, H), (L,)

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
        """Mean cross-entropy over the answer tokens of a batch."""
        embeds, mask, labels = self.batch_inputs(examples, with_answer=True)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False)
        return out.loss

    def generate(self, examples: Sequence[dict[str, Any]], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers for a batch of examples (prompts without answers)."""
        import torch

        self.eval()
        n = max_new_tokens or self.config.max_new_tokens
        with torch.no_grad():
            embeds, mask, _ = self.batch_inputs(examples, with_answer=False, pad_left=True)
            out = self.lm.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
            )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def _projector_state(path: Path) -> dict:
    """``{"<encoder>.weight": (H, D), "<encoder>.bias": (H,)}`` from a head run, llm run or file."""
    import torch
    from safetensors.torch import load_file

    ckpt = path / "checkpoints" / "best.ckpt"
    if path.is_dir() and ckpt.is_file():  # a head run (heads.train)
        from heads.predict import read_checkpoint

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
    return {k.removeprefix("projectors."): v for k, v in load_file(str(file)).items()}
