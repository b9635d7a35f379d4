"""Load an existing classifier safely: ``.keras``, legacy tf.keras 2.x ``.h5``, SavedModel.

    melanoma-bench evaluate efficient_net_b6_samplewise.h5 --data-dir ~/data/melanoma

Every problem with a file (missing, truncated, not a model, code inside, wrong output
shape, unreadable input size) is a ``UserError`` with one line that names the file.
No code stored in a file runs unless ``trust_code`` is set: Lambda layers are refused
(Keras' ``safe_mode``, plus our own scan so the message says what and why), and a
TensorFlow SavedModel, which is a TensorFlow program, is refused too.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melanoma.models import sidecars
from melanoma.util.errors import UserError, first_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
CODE_LAYERS = ("Lambda", "TFOpLambda")
TRUST_HINT = "pass --trust-model-code only if you trust where the file comes from"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict, with what was learnt about it while loading."""

    path: Path
    model: object  # a keras.Model mapping (N, size, size, 3) float32 to (N, 2) or (N, 1)
    format: str  # "keras" | "h5 (tf.keras 2.x legacy)" | "savedmodel"
    image_size: int
    output: str  # "softmax2" | "sigmoid1"
    sidecar: dict | None = field(default=None)

    def predict(self, data) -> np.ndarray:
        """Malignant-class probabilities (float64) for a dataset of preprocessed batches."""
        return self._column(np.asarray(self.model.predict(data, verbose=0)))

    def predict_uint8(self, data, preprocessing) -> np.ndarray:
        """The same for the loader's uint8 batches (``CacheBatches``, perhaps padded),
        preprocessed by the input layer ``run`` trains with (melanoma/models/image_input.py)
        in inference mode."""
        from melanoma.models.image_input import for_inference
        from melanoma.models.predict import predict_rows

        model = for_inference(self.model, preprocessing)
        return self._column(predict_rows(model, data))

    def predict_batches(self, batches) -> np.ndarray:
        """The same, for an iterable of float32 arrays (one predict_on_batch each)."""
        outputs = [np.asarray(self.model.predict_on_batch(x)) for x in batches]
        width = 2 if self.output == "softmax2" else 1
        return self._column(np.concatenate(outputs) if outputs else np.zeros((0, width)))

    def _column(self, raw: np.ndarray) -> np.ndarray:
        check_probabilities(self.path, raw, self.output)
        column = raw[:, 1] if self.output == "softmax2" else raw[:, 0]
        return column.astype(np.float64)


def _depthwise_shim():
    """DepthwiseConv2D that ignores ``groups=1``, written into every tf.keras 2.x file."""
    import keras

    class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
        def __init__(self, *args, groups=None, **kwargs):
            if groups not in (None, 1):
                raise ValueError(f"DepthwiseConv2D with groups={groups} is not supported")
            super().__init__(*args, **kwargs)

    return DepthwiseConv2D


def detect_format(path: Path) -> str:
    """'keras', 'h5' or 'savedmodel' from the file's content, not its name."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise UserError(f"{path}: a folder, but not a TensorFlow SavedModel (no saved_model.pb)")
    if not path.is_file():  # a FIFO would block the open below forever
        raise UserError(f"{path}: not a regular file or folder (a pipe, socket or device); "
                        f"expected a .keras or .h5 file or a SavedModel folder")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise UserError(f"{path}: the file is empty")
    if head == HDF5_MAGIC:
        return "h5"
    if head[:4] == ZIP_MAGIC:
        return "keras"
    raise UserError(f"{path}: not a model file (neither a .keras archive, an HDF5 .h5 file "
                    f"nor a SavedModel folder)")


def read_config(path: Path, kind: str) -> dict:
    """The model's architecture JSON, read without building anything."""
    try:
        if kind == "h5":
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
                if raw is None:
                    raise UserError(f"{path}: an HDF5 file without a model configuration "
                                    f"(weights only?); a full model saved with model.save() "
                                    f"is needed")
        else:
            with zipfile.ZipFile(path) as archive:
                if "config.json" not in archive.namelist():
                    raise UserError(f"{path}: a zip archive but not a Keras model "
                                    f"(no config.json)")
                raw = archive.read("config.json")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except UserError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError) as error:
        raise UserError(f"{path}: truncated or corrupt {'HDF5' if kind == 'h5' else '.keras'} "
                        f"file ({first_line(error)})") from None


def code_layers(config) -> list[str]:
    """Names of layers whose stored Python code would run when the model is built."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") in CODE_LAYERS:
            inner = config.get("config", {})
            found.append(f"{config['class_name']} layer {inner.get('name', '?')!r}")
        for value in config.values():
            found += code_layers(value)
    elif isinstance(config, list):
        for value in config:
            found += code_layers(value)
    return found


def check_file(path: Path, trust_code: bool = False) -> str:
    """The file's format ('keras', 'h5', 'savedmodel') once it is known to be loadable
    without running code from it (or ``trust_code`` allows that); reads the architecture
    JSON only, builds nothing, so ``run`` refuses such a file before any training."""
    kind = detect_format(path)
    if kind == "savedmodel":
        if not trust_code:
            raise UserError(f"{path}: refused to load: a TensorFlow SavedModel is a TensorFlow "
                            f"program (its stored graph runs as written, unlike .keras/.h5 "
                            f"files which Keras rebuilds from known layers); {TRUST_HINT}")
        return kind
    risky = code_layers(read_config(path, kind))
    if risky and not trust_code:
        raise UserError(f"{path}: refused to load: it contains {', '.join(risky)}, whose Python "
                        f"code stored in the file would run; {TRUST_HINT}")
    return kind


def _load_keras_file(path: Path, kind: str, trust_code: bool):
    import keras

    custom = {"DepthwiseConv2D": _depthwise_shim()} if kind == "h5" else None
    try:
        return keras.saving.load_model(path, custom_objects=custom, compile=False,
                                       safe_mode=not trust_code)
    except Exception as error:  # noqa: BLE001 - anything Keras raises means "cannot load"
        if "safe_mode" in str(error):
            raise UserError(f"{path}: refused to load: Keras found code in it "
                            f"({first_line(error)[:120]}...); {TRUST_HINT}") from None
        raise UserError(f"{path}: cannot load as a Keras model ({first_line(error)})") from None


def _load_savedmodel(path: Path, trust_code: bool):
    """Wrap the serving signature in a keras.Model (TFSMLayer); input size from the signature
    (only after ``check_file`` allowed it). A SavedModel is a TensorFlow program: it needs
    Keras on TensorFlow."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UserError(f"{path}: a TensorFlow SavedModel needs TensorFlow and Keras on it "
                        f"(KERAS_BACKEND=tensorflow; this process runs Keras on "
                        f"{keras.backend.backend()}); or convert it to a .keras file")
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as error:  # noqa: BLE001
        raise UserError(f"{path}: cannot load as a SavedModel ({first_line(error)})") from None
    args, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        raise UserError(f"{path}: the serving signature takes {len(specs)} inputs; expected one "
                        f"image batch")
    outputs = layer.call_endpoint_fn.structured_outputs
    if isinstance(outputs, dict) and len(outputs) != 1:
        raise UserError(f"{path}: the serving signature has outputs {sorted(outputs)}; "
                        f"expected one")
    shape = tuple(specs[0].shape)
    size = input_size(path, (None, *shape[1:]) if len(shape) == 4 else shape)
    inputs = keras.Input((size, size, 3), name="image")
    result = layer(inputs)
    if isinstance(result, dict):
        result = next(iter(result.values()))
    return keras.Model(inputs, result, name=path.name)


def input_size(path: Path, shape) -> int:
    """The square input size of an (N, H, W, 3) input shape, or a UserError saying why not."""
    shape = tuple(shape)
    if len(shape) != 4 or shape[-1] != 3 or not shape[1] or not shape[2]:
        raise UserError(f"{path}: cannot read the input size from input shape {shape}; "
                        f"expected (None, size, size, 3)")
    if shape[1] != shape[2]:
        raise UserError(f"{path}: non-square input {shape[1]}x{shape[2]} is not supported")
    return int(shape[1])


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is not None:
        return getattr(activation, "__name__", None)
    return "softmax" if type(layer).__name__ == "Softmax" else None


def output_kind(path: Path, model) -> str:
    """'softmax2' or 'sigmoid1'; any other output is refused with the shape found."""
    if len(model.outputs) != 1:
        raise UserError(f"{path}: the model has {len(model.outputs)} outputs; expected one "
                        f"(2 softmax columns or 1 sigmoid column)")
    shape = tuple(model.outputs[0].shape)
    kind = {2: "softmax2", 1: "sigmoid1"}.get(shape[-1]) if len(shape) == 2 else None
    if kind is None:
        raise UserError(f"{path}: output shape {shape} is not a benign/malignant classifier's; "
                        f"expected (None, 2) softmax or (None, 1) sigmoid")
    activation = _activation_name(model.layers[-1]) if model.layers else None
    expected = "softmax" if kind == "softmax2" else "sigmoid"
    if activation not in (None, expected):
        raise UserError(f"{path}: output shape {shape} ends in a {activation!r} activation; "
                        f"expected {expected} probabilities")
    return kind


def check_probabilities(path: Path, raw: np.ndarray, kind: str) -> None:
    """Refuse outputs that are not probabilities (logits, scores) rather than report them."""
    if raw.size and (not np.all(np.isfinite(raw)) or raw.min() < -1e-6 or raw.max() > 1 + 1e-6):
        raise UserError(f"{path}: outputs are not probabilities (range {raw.min():.4g} to "
                        f"{raw.max():.4g}); expected softmax or sigmoid outputs")
    if kind == "softmax2" and raw.size and np.abs(raw.sum(axis=1) - 1).max() > 1e-3:
        raise UserError(f"{path}: the two output columns do not sum to 1; expected softmax")


def load(path: str | Path, trust_code: bool = False) -> LoadedModel:
    """Load ``path`` (format found from its content), check its input and output."""
    path = Path(path).expanduser()
    kind = check_file(path, trust_code)
    if kind == "savedmodel":
        model = _load_savedmodel(path, trust_code)
    else:
        model = _load_keras_file(path, kind, trust_code)
    if len(model.inputs) != 1:
        raise UserError(f"{path}: the model has {len(model.inputs)} inputs; expected one image")
    size = input_size(path, model.inputs[0].shape)
    label = {"h5": "h5 (tf.keras 2.x legacy)"}.get(kind, kind)
    return LoadedModel(path, model, label, size, output_kind(path, model),
                       sidecars.beside(path) if kind == "keras" else None)
