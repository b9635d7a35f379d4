"""Grad-CAM heat maps of a classifier's class score (overlays: reporting/galleries.py).

    heat = gradcam(model, pixels_uint8, preprocessing)   # (N, H, W) float32 in [0, 1]

Grad-CAM (Selvaraju et al., 2017): the gradient of the class score with respect to the feature
map of the last convolutional block (EfficientNet's ``top_activation``), averaged over space,
weights each channel; the ReLU of the weighted sum is the map. The score is the class's
log-odds log(p_c / p_other), taken before the final softmax/sigmoid (the output layer's
activation is switched off during the pass): z_c - z_other, which does not saturate. From the
probabilities it would: a float32 p of exactly 1.0 gives no gradient and an empty map. The
map is computed at the model's input size and then resized to the images'. The backbone may
be nested as a sub-model (a chain input -> ... -> backbone -> head), as in other code's files.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
from PIL import Image

from melanoma.models.backbones import get_backbone
from melanoma.util.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_LAYER = "top_activation"  # keras.applications EfficientNet's last conv block output
BATCH = 16


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _walk(model, path=()):
    """(path of nested models, layer) for every non-model layer, in the models' layer order."""
    for layer in model.layers:
        if _is_model(layer):
            yield from _walk(layer, path + (layer,))
        else:
            yield path, layer


def _rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):
        return None


def _spatial(layer) -> bool:
    """A 4-D output with more than one position (not a 1x1 squeeze-excite tensor)."""
    return _rank(layer) == 4 and tuple(layer.output.shape[1:3]) != (1, 1)


def find_layer(model, name: str | None = None):
    """(path of nested models, layer) of ``name``; by default ``top_activation`` if present,
    else the last layer with a spatial 4-D (N, h, w, channels) output, h * w > 1."""
    import keras

    found = [(p, layer) for p, layer in _walk(model)
             if not isinstance(layer, keras.layers.InputLayer)]
    if name is not None or any(layer.name == DEFAULT_LAYER for _, layer in found):
        wanted = name or DEFAULT_LAYER
        for path, layer in found:
            if layer.name == wanted:
                if _rank(layer) != 4:
                    raise UserError(f"layer {wanted!r} has no 4-D (N, h, w, c) output: Grad-CAM "
                                    f"needs a convolutional feature map")
                return path, layer
        spatial = [layer.name for _, layer in found if _spatial(layer)][-5:]
        raise UserError(f"model {model.name!r} has no layer {wanted!r}; its last 4-D layers: "
                        f"{', '.join(spatial) or 'none'}")
    spatial = [(p, layer) for p, layer in found if _spatial(layer)]
    if not spatial:
        raise UserError(f"model {model.name!r} has no spatial 4-D layer output: not a CNN")
    return spatial[-1]


class _Forward:
    """Computes (feature map, model output) in one pass, for a target layer that may sit
    inside nested sub-models: each level is a chain of layers, one of which holds the target."""

    def __init__(self, model, path, layer):
        import keras

        self.model, self.path, self.target = model, path, layer
        self.compiled = {}  # JAX: the jitted gradient per (class, logits)
        holder = path[-1] if path else model
        if isinstance(holder, keras.Sequential):
            self.inner = _chain(holder, layer)
        else:
            self.inner = keras.Model(holder.inputs, [layer.output, holder.outputs[0]])
        self.checked = not path

    def __call__(self, x):
        refusal = (f"model {self.model.name!r}: the nested backbone is not in a plain chain "
                   f"of layers; Grad-CAM cannot follow it")
        try:
            features, out = self._level(self.model, 0, x)
        except (ValueError, TypeError) as error:
            if self.checked:
                raise
            raise UserError(refusal) from error
        if not self.checked:  # a nested backbone must sit in a plain chain: check once
            expected = self.model(x, training=False)
            if not np.allclose(np.asarray(out), np.asarray(expected), atol=1e-4):
                raise UserError(refusal)
            self.checked = True
        return features, out

    def _level(self, model, depth, x):
        if depth == len(self.path):
            return self.inner(x, training=False)
        import keras

        features = None
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if layer is self.path[depth]:
                features, x = self._level(layer, depth + 1, x)
            else:
                x = layer(x, training=False)
        return features, x


def _chain(sequential, target):
    """(features, output) of a Sequential as a new graph: a reloaded Sequential may hold a
    second call of its layers, whose ``layer.output`` the model's output does not use."""
    import keras

    x = inputs = keras.Input(tuple(sequential.inputs[0].shape[1:]))
    features = None
    for layer in sequential.layers:
        x = layer(x)
        features = x if layer is target else features
    return keras.Model(inputs, [features, x])


@contextmanager
def _logits(model):
    """Switch the output layer's softmax/sigmoid off for the duration (True if it was)."""
    import keras

    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    if getattr(activation, "__name__", "") not in ("softmax", "sigmoid"):
        yield False
        return
    last.activation = keras.activations.linear
    try:
        yield True
    finally:
        last.activation = activation


def _class_log_odds(outputs, class_index: int, logits: bool):
    """log(p_c / p_other) of (N, 2) softmax or (N, 1) sigmoid outputs, from the logits when
    ``logits`` (exact), else from the probabilities."""
    from keras import ops

    z = ops.cast(outputs, "float32")
    if logits:
        score = z[:, 0] if z.shape[-1] == 1 else z[:, 1] - z[:, 0]
    else:
        p = ops.concatenate([1.0 - z, z], axis=-1) if z.shape[-1] == 1 else z
        score = ops.log(p[:, 1]) - ops.log(p[:, 0])
    return score if class_index == 1 else -score


def _resize_maps(maps: np.ndarray, shape) -> np.ndarray:
    """Bilinear resize of (n, h, w) maps to ``shape`` (half-pixel centres, no antialiasing:
    tf.image.resize's definition, on every backend)."""
    from keras import ops

    if tuple(maps.shape[1:3]) == tuple(shape):
        return maps
    resized = ops.image.resize(ops.convert_to_tensor(maps[..., None], "float32"), tuple(shape),
                               interpolation="bilinear", antialias=False)
    return np.asarray(ops.convert_to_numpy(resized))[..., 0]


def _resize_batch(pixels: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    from melanoma.data.decode import INTERPOLATIONS

    if pixels.shape[1:3] == (size, size):
        return pixels
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size),
                                                          INTERPOLATIONS[interpolation]))
                     for p in pixels])


def _gradients(forward, x, class_index: int, logits: bool):
    """(feature map, d class log-odds / d feature map) of one batch, as float32 NumPy, by
    the backend's own differentiation (TensorFlow's tape, JAX's grad, torch autograd)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)  # so the pass is recorded even when every weight is frozen
            features, outputs = forward(x)
            score = tf.reduce_sum(_class_log_odds(outputs, class_index, logits))
        grads = tape.gradient(score, features)
    elif backend == "torch":
        import torch

        x = torch.as_tensor(x).to(keras.config.floatx()).requires_grad_(True)
        features, outputs = forward(x)
        score = torch.sum(_class_log_odds(outputs, class_index, logits))
        grads, = torch.autograd.grad(score, features)
    elif backend == "jax":
        features, grads = _jax_gradients(forward, x, class_index, logits)
    else:
        raise UserError(f"Grad-CAM has no gradient for the Keras backend {backend!r}")
    as_numpy = keras.ops.convert_to_numpy
    return (np.asarray(as_numpy(features), np.float32), np.asarray(as_numpy(grads), np.float32))


def _jax_gradients(forward, x, class_index: int, logits: bool):
    """JAX differentiates functions, not tapes: the gradient with respect to a zero tensor
    added to the target layer's output is the gradient with respect to that output. The
    pass is compiled once per (model, class, batch shape): op by op, JAX's gradient through
    an EfficientNet takes minutes on a CPU."""
    import jax
    import jax.numpy as jnp

    target = forward.target
    if "call" in vars(target):
        raise UserError(f"layer {target.name!r} has a patched call(); Grad-CAM cannot follow it")
    plain = target.call

    def score(delta, images):
        target.call = lambda *args, **kwargs: plain(*args, **kwargs) + delta
        try:
            features, outputs = forward(images)
        finally:
            del target.call  # back to the class's method
        return jnp.sum(_class_log_odds(outputs, class_index, logits)), features

    key = (class_index, logits)
    compiled = forward.compiled.get(key)
    if compiled is None:
        compiled = forward.compiled[key] = jax.jit(jax.grad(score, has_aux=True))
    images = jnp.asarray(x, jnp.float32)
    features, _ = forward(images)  # eagerly: its shape, and a nested backbone's one check
    grads, features = compiled(jnp.zeros(features.shape, features.dtype), images)
    return features, grads


def _cam_batch(forward, x, class_index: int, size: int, logits: bool):
    """Heat maps (n, size, size) in [0, 1] of one preprocessed batch."""
    features, grads = _gradients(forward, x, class_index, logits)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((weights * features).sum(axis=-1), 0.0)
    cam = _resize_maps(cam, (size, size))
    peak = cam.reshape(len(cam), -1).max(axis=1)
    return np.where(peak[:, None, None] > 0, cam / np.maximum(peak, 1e-12)[:, None, None], 0.0)


def gradcam(model, images_uint8, preprocessing=None, class_index: int = 1,
            layer: str | None = None, interpolation: str = "nearest") -> np.ndarray:
    """Grad-CAM of ``class_index`` (1 = malignant) for uint8 images (N, H, W, 3): (N, H, W)
    float32 in [0, 1] (each map divided by its maximum; all zeros where no evidence for the
    class). Images are resized to the model's input (PIL ``interpolation``, as the loader),
    ``preprocessing`` (a Preprocessing; None = raw pixels) applied, and each map, computed at
    the input size, is resized back (bilinear) to H x W."""
    pixels = np.asarray(images_uint8)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
        raise UserError(f"gradcam takes uint8 images (N, H, W, 3), got {pixels.dtype} "
                        f"{pixels.shape}")
    if class_index not in (0, 1):
        raise UserError(f"class_index must be 0 (benign) or 1 (malignant), got {class_index}")
    size = int(model.input_shape[1])
    path, target = find_layer(model, layer)
    log.debug("Grad-CAM of %s at layer %s", model.name, "/".join(
        [m.name for m in path] + [target.name]))
    forward = _Forward(model, path, target)
    maps = []
    with _logits(model) as logits:
        for start in range(0, len(pixels), BATCH):
            x = _resize_batch(pixels[start:start + BATCH], size, interpolation).astype(np.float32)
            x = preprocessing.apply(x) if preprocessing is not None else x
            cam = _cam_batch(forward, x, class_index, size, logits)
            cam = _resize_maps(cam.astype(np.float32), pixels.shape[1:3])
            maps.append(np.clip(cam, 0.0, 1.0).astype(np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, *pixels.shape[1:3]), np.float32)


MIN_MAP_SIDE = 8


def too_coarse(height: int, width: int, image_size: int) -> str:
    """Why a feature map of ``height`` x ``width`` cannot localise ("" when it can)."""
    if min(height, width) >= MIN_MAP_SIDE:
        return ""
    return (f"the last convolutional block's map is {height} x {width} at {image_size} px, "
            f"too coarse to localise; Grad-CAM is drawn from {MIN_MAP_SIDE} x {MIN_MAP_SIDE} "
            f"cells up (larger images or a backbone with a finer last block)")


def check_resolution(model, layer: str | None = None) -> None:
    """A UserError when the Grad-CAM layer's map is too coarse to localise."""
    height, width = (int(x) for x in find_layer(model, layer)[1].output.shape[1:3])
    if why := too_coarse(height, width, int(model.input_shape[1])):
        raise UserError(why)


def case_heatmaps(model, preprocessing, files, data_root, interpolation: str = "nearest",
                  class_index: int = 1, layer: str | None = None) -> dict[str, np.ndarray]:
    """file -> Grad-CAM (model input size) for gallery ``files`` (relative to ``data_root``),
    decoded as the model's pipeline decodes them; unreadable files are left out (logged)."""
    from pathlib import Path

    from melanoma.data.decode import load_images

    files = list(dict.fromkeys(files))
    size = int(model.input_shape[1])
    loaded = load_images([Path(data_root) / f for f in files], [0] * len(files), size,
                         interpolation)
    kept = {Path(data_root) / f: f for f in files}
    names = [kept[Path(p)] for p in loaded.files]
    if not names:
        return {}
    maps = gradcam(model, loaded.pixels, preprocessing, class_index, layer, interpolation)
    return dict(zip(names, maps))


def file_model_heatmaps(spec: dict, files, data_root,
                        benign_files=()) -> dict[str, np.ndarray]:
    """file -> Grad-CAM by a model file ``evaluate`` scored (its report spec: ``model_file``,
    ``sha256``, ``preprocessing``, ``featurewise_mean``, ``resize``, ``trust_model_code``),
    decoded and preprocessed as it was evaluated; of the benign class for ``benign_files``.
    A UserError when the file is gone or changed, or its map is too coarse to localise."""
    from pathlib import Path

    from melanoma.data.cache import file_sha256
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models.loading import load

    path = Path(spec["model_file"])
    if not path.exists():
        raise UserError(f"the model file {path} is not there any more")
    if spec.get("sha256") and path.is_file() and file_sha256(path).hex() != spec["sha256"]:
        raise UserError(f"the model file {path} changed since it was evaluated")
    from melanoma.util import tfsetup

    tfsetup.import_tensorflow()
    loaded = load(path, trust_code=bool(spec.get("trust_model_code")))
    check_resolution(loaded.model)
    preprocessing = get_preprocessing(spec["preprocessing"], spec.get("featurewise_mean"))
    interpolation = str(spec.get("resize", "nearest")).split(" ", 1)[0]
    benign, maps = set(benign_files), {}
    for class_index, part in ((1, [f for f in files if f not in benign]),
                              (0, [f for f in files if f in benign])):
        if part:
            maps.update(case_heatmaps(loaded.model, preprocessing, part, data_root,
                                      interpolation, class_index))
    return maps


def saved_model_heatmaps(models_dir, key: str, files, data_root,
                         benign_files=()) -> dict[str, np.ndarray] | None:
    """file -> Grad-CAM by the model saved under ``key`` (of the benign class for
    ``benign_files``, e.g. missed melanomas; else malignant), images prepared as its sidecar
    says; None when no such model is saved (the backend loads only then). A UserError when
    its last map is too coarse to localise (``MIN_MAP_SIDE``; known from the sidecar)."""
    from melanoma.data.preprocessing import get_preprocessing
    from melanoma.models import storage

    saved = storage.find(models_dir, key)
    if saved is None:
        return None
    variant, size = saved.sidecar.get("variant") or {}, saved.sidecar.get("image_size")
    if isinstance(variant.get("backbone"), str) and isinstance(size, int):
        side = get_backbone(variant["backbone"]).feature_side(size)  # known without loading
        if too_coarse(side, side, size):
            raise UserError(too_coarse(side, side, size))
    from melanoma.util import backend

    backend.quiet_import()  # TensorFlow's C++ start-up lines kept off the terminal
    model = storage.load(saved)
    check_resolution(model)  # any other network: its real map
    meta = saved.sidecar
    preprocessing = get_preprocessing(meta["preprocessing"], meta.get("featurewise_mean"))
    benign = set(benign_files)
    maps = {}
    for class_index, part in ((1, [f for f in files if f not in benign]),
                              (0, [f for f in files if f in benign])):
        if part:
            maps.update(case_heatmaps(model, preprocessing, part, data_root,
                                      meta.get("interpolation", "nearest"), class_index))
    return maps
