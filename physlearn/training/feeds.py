"""How a dataset's flat rows become a model's batch: images, or sequences of steps."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class ImageFeed:
    """Rows reshaped (and transposed) to the declared input: vectors or images."""

    x_name: str
    y_name: str
    n_classes: int
    stored: tuple  # the stored example shape
    order: tuple  # axis order that turns it into the declared one
    shape: tuple  # the declared input shape

    def batch(self, x, labels) -> dict:
        x = jnp.transpose(x.reshape((x.shape[0],) + tuple(self.stored)), self.order)
        return {self.x_name: x.reshape((x.shape[0],) + tuple(self.shape)),
                self.y_name: jax.nn.one_hot(labels, self.n_classes, dtype=x.dtype)}


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
