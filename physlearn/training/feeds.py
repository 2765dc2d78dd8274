"""How a dataset's flat rows become a model's batch: images, or sequences of steps."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class ImageFeed:
    """Rows reshaped (and transposed) to the declared input: vectors or images (no input
    when `x_name` is None). Class labels become one-hot targets; arrays to fit
    (`n_classes` 0) are passed on in the model's float type."""

    x_name: str | None
    y_name: str
    n_classes: int  # 0: the targets are arrays to fit
    stored: tuple  # the stored example shape
    order: tuple  # axis order that turns it into the declared one
    shape: tuple  # the declared input shape

    def batch(self, x, labels) -> dict:
        target = (jax.nn.one_hot(labels, self.n_classes, dtype=x.dtype) if self.n_classes
                  else labels.astype(x.dtype))
        if self.x_name is None:
            return {self.y_name: target}
        x = jnp.transpose(x.reshape((x.shape[0],) + tuple(self.stored)), self.order)
        return {self.x_name: x.reshape((x.shape[0],) + tuple(self.shape)), self.y_name: target}


@dataclass(frozen=True)
class SequenceFeed:
    """Each example's features cut into `length` steps of `step_inputs` inputs."""

    x_name: str
    y_name: str
    n_classes: int
    length: int
    step_inputs: int

    def batch(self, x, labels) -> dict:
        return {self.x_name: x.reshape(x.shape[0], self.length, self.step_inputs),
                self.y_name: jax.nn.one_hot(labels, self.n_classes, dtype=x.dtype)}


@dataclass(frozen=True)
class Augment:
    """Random crops (zero padding `pad` on each side, then a window of the original size) and
    horizontal flips of a batch of images whose last two axes are height and width: fresh
    for every example and every step, from the step's key. Training batches only."""

    pad: int = 0
    flip: bool = False

    def __bool__(self) -> bool:
        return bool(self.pad or self.flip)

    def __call__(self, x: jax.Array, key: jax.Array) -> jax.Array:
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        kcrop, kflip = jax.random.split(key)
        if self.pad:
            p = self.pad
            padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
            offsets = jax.random.randint(kcrop, (n, 2), 0, 2 * p + 1)

            def crop(img, off):
                start = (0,) * (img.ndim - 2) + (off[0], off[1])
                return jax.lax.dynamic_slice(img, start, img.shape[:-2] + (h, w))
            x = jax.vmap(crop)(padded, offsets)
        if self.flip:
            flip = jax.random.bernoulli(kflip, 0.5, (n,) + (1,) * (x.ndim - 1))
            x = jnp.where(flip, x[..., ::-1], x)
        return x
