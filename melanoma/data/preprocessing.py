"""Preprocessing variants composed from small named steps, declared as data.

Order as in the original ``ImageDataGenerator``: (augmentation) -> rescale -> centring.
``native`` feeds raw [0, 255] pixels, which is what keras.applications EfficientNet
expects (it rescales internally); the three original variants divide by 255 before the
model's own Rescaling, i.e. twice: faithful to the original, and said in every report row.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from melanoma.util.errors import unknown_name


@dataclass(frozen=True)
class Rescale:
    """x * scale (1/255 maps [0, 255] to [0, 1])."""

    scale: float = 1.0 / 255.0

    def describe(self) -> str:
        return "x/255" if self.scale == 1.0 / 255.0 else f"x*{self.scale:g}"

    def apply(self, x, mean):
        return x * np.float32(self.scale)


@dataclass(frozen=True)
class SamplewiseCenter:
    """Subtract each image's single mean (over height, width and channels)."""

    def describe(self) -> str:
        return "x - mean(image)"

    def apply(self, x, mean):
        from keras import ops

        return x - ops.mean(x, axis=(-3, -2, -1), keepdims=True)


@dataclass(frozen=True)
class FeaturewiseCenter:
    """Subtract the per-channel mean of the training split (after the steps before it)."""

    needs_fit = True

    def describe(self) -> str:
        return "x - mean_rgb(train)"

    def apply(self, x, mean):
        if mean is None:
            raise ValueError("featurewise centring used before its training-split mean was fitted")
        return x - np.asarray(mean, np.float32)


@dataclass(frozen=True)
class Preprocessing:
    """A named chain of steps plus, for featurewise variants, the fitted channel mean."""

    name: str
    steps: tuple = ()
    mean: tuple[float, float, float] | None = field(default=None)

    @property
    def needs_fit(self) -> bool:
        return any(getattr(step, "needs_fit", False) for step in self.steps)

    def describe(self) -> str:
        """The spec as printed in report rows, e.g. ``samplewise: x/255 -> x - mean(image)``."""
        chain = " -> ".join(step.describe() for step in self.steps) or "x (raw 0-255)"
        if self.mean is not None:
            chain += f" [mean_rgb={', '.join(f'{m:.4f}' for m in self.mean)}]"
        return f"{self.name}: {chain}"

    def fit(self, pixels: np.ndarray) -> Preprocessing:
        """Return a copy with the channel mean of ``pixels`` (uint8 N,H,W,3) after the
        steps that precede centring; a no-op for variants that need no fitting."""
        if not self.needs_fit:
            return self
        sums = pixels.reshape(-1, 3).astype(np.float64).sum(axis=0)
        return self.with_channel_mean(sums / max(len(pixels.reshape(-1, 3)), 1))

    def with_channel_mean(self, channel_mean) -> Preprocessing:
        """A copy centred on ``channel_mean`` (float64, per channel, in [0, 255]) after the
        steps that precede centring (the rescale); a no-op for variants that need no fitting."""
        if not self.needs_fit:
            return self
        scale = np.float64(1.0)
        for step in self.steps:
            if isinstance(step, Rescale):
                scale *= step.scale
        mean = np.asarray(channel_mean, np.float64) * scale
        return replace(self, mean=tuple(float(m) for m in mean))

    def layer_parameters(self) -> tuple[float, float, tuple[float, float, float]]:
        """(scale, samplewise 0/1, channel mean): the chain as the model's input layer runs
        it, ``x * scale - samplewise * mean(image) - channel mean``
        (melanoma/models/image_input.py); a chain of another shape raises ValueError."""
        scale, samplewise, mean, centred = 1.0, 0.0, (0.0, 0.0, 0.0), False
        for step in self.steps:
            if isinstance(step, Rescale) and not centred:
                scale *= step.scale
            elif isinstance(step, SamplewiseCenter) and not centred:
                samplewise, centred = 1.0, True
            elif isinstance(step, FeaturewiseCenter) and not centred:
                if self.mean is None:
                    raise ValueError("featurewise centring used before its training-split "
                                     "mean was fitted")
                mean, centred = tuple(self.mean), True
            else:
                raise ValueError(f"preprocessing {self.name!r}: the input layer runs rescaling "
                                 f"then at most one centring, not {self.describe()}")
        return scale, samplewise, mean

    def apply(self, x):
        """Apply the chain to a float32 tensor or array of [0, 255] pixels."""
        for step in self.steps:
            x = step.apply(x, self.mean)
        return x


PREPROCESSING = {
    "rescale": Preprocessing("rescale", (Rescale(),)),
    "samplewise": Preprocessing("samplewise", (Rescale(), SamplewiseCenter())),
    "featurewise": Preprocessing("featurewise", (Rescale(), FeaturewiseCenter())),
    "native": Preprocessing("native", ()),
}


def get_preprocessing(name: str, mean=None) -> Preprocessing:
    """The registered variant ``name`` (with a stored ``mean`` if given)."""
    if name not in PREPROCESSING:
        raise unknown_name("preprocessing", name, PREPROCESSING)
    variant = PREPROCESSING[name]
    return replace(variant, mean=tuple(mean)) if mean is not None else variant
