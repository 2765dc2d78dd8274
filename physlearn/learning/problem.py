"""What every learning algorithm works on: a compiled model made ready to learn.

Three problems implement it: `EquilibriumProblem` (states relax to a fixed point),
`TrajectoryProblem` (states follow a trajectory over an input sequence) and `StackProblem`
(trajectory cores stacked into a network). The trainer and gradcheck speak only this.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp

from .base import Batch, Params

if TYPE_CHECKING:
    from ..physics.base import PhysicsKind


class Problem(abc.ABC):
    """A model, its dynamics and its loss L (the batch-mean cost)."""

    gen: Any  # the generated module
    # what to try when a run diverges
    divergence_hint: ClassVar[str] = (
        "try a smaller learning rate (--lr), a smaller step (--dt) or beta (--beta), or more "
        "relaxation steps")

    @property
    def kind(self) -> PhysicsKind:
        """The model's physics kind (the compiler's object; not in standalone scripts)."""
        from ..physics import kind_of
        return kind_of(self.gen)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The learned parameters (the optimizer's keys)."""
        return tuple(self.gen.INFO.params)

    @abc.abstractmethod
    def objective(self, params: Params, data: Batch) -> tuple[jax.Array, dict]:
        """(L, aux): the loss through the whole computation, which BPTT differentiates."""

    @abc.abstractmethod
    def summary(self, params: Params, data: Batch, aux: dict) -> dict:
        """Per-batch numbers the trainer reports: loss, hits, steps, residual, finite."""

    @abc.abstractmethod
    def evaluate(self, params: Params, data: Batch, labels: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
        """(correct predictions, summed loss) on a batch of test data."""

    @abc.abstractmethod
    def diagnose(self, params: Params, data: Batch, algorithm: Any, where: str) -> str:
        """Name the phase, step and variable where NaN/inf first appears on this batch."""

    def gradient(self, algorithm: Any, params: Params, data: Batch, key: Any
                 ) -> tuple[Params, dict]:
        """The algorithm's estimate of dL/dtheta on this problem (a chain of blocks
        runs it inside each block; everything else asks the algorithm directly)."""
        return algorithm.gradient(self, params, data, key)

    def tie(self, g: Params) -> Params:
        """Autodiff's gradient in the derived rules' convention (symmetric pairs tied)."""
        return tied(self.gen, g)

    def initial_parameters(self, key: jax.Array, dtype: Any) -> tuple[Params, Params]:
        """(constants, learned parameters) at the start of a run."""
        full = self.gen.init_params(key, dtype)
        return ({k: full[k] for k in self.gen.INFO.consts},
                {k: full[k] for k in self.gen.INFO.params})

    def project(self, params: Params) -> Params:
        """Constraints after each step (`nonnegative` parameters stay >= 0)."""
        return self.gen.project(params)

    def data_shapes(self) -> dict[str, tuple]:
        """Each batch array's shape after the batch axis (None: any length, e.g. time)."""
        info = self.gen.INFO
        timed = getattr(info, "time_varying", ())
        return {n: ((None,) if n in timed else ()) + tuple(info.dims[d] for d in dims)
                for n, dims in {**info.inputs, **info.targets}.items()}

    def check_batch(self, params: Params, data: Batch) -> None:
        """Refuse parameters or a batch that do not fit the model (DataError, by name),
        before JAX meets them."""
        from ..errors import DataError
        for what, d in (("params", params), ("data", data)):
            if not isinstance(d, dict):
                raise DataError(f"{what} must be a dict of arrays, got {type(d).__name__}")
        want = jax.eval_shape(lambda: self.initial_parameters(jax.random.PRNGKey(0),
                                                              jnp.float32))
        def array(where: str, v: Any, floating: bool) -> None:
            if not (hasattr(v, "shape") and hasattr(v, "dtype")):
                raise DataError(f"{where} must be an array (numpy or jax), got "
                                f"{type(v).__name__}")
            kind = jnp.dtype(v.dtype).kind
            if floating and kind != "f":
                raise DataError(f"{where} holds {v.dtype}; pass real floating-point numbers "
                                "(e.g. x / 255.0 for pixels stored as integers)")
            if not floating and kind not in "iu":
                raise DataError(f"{where} holds {v.dtype}; it is an index array (integers)")

        for k, w in {**want[0], **want[1]}.items():
            if k not in params:
                raise DataError(f"params lack {k!r}; problem.initial_parameters(key, dtype) "
                                "gives (constants, learned parameters): pass both, merged")
            array(f"params[{k!r}]", params[k], jnp.dtype(w.dtype).kind == "f")
            if tuple(jnp.shape(params[k])) != tuple(w.shape):
                raise DataError(f"params[{k!r}] has shape {tuple(jnp.shape(params[k]))}; the "
                                f"model's is {tuple(w.shape)}")
        batch = None
        shapes = self.data_shapes()
        for n, s in shapes.items():
            if n not in data:
                raise DataError(f"data lacks {n!r}; the model reads {', '.join(shapes)}")
            array(f"data[{n!r}]", data[n], True)
            got = tuple(jnp.shape(data[n]))
            if len(got) != len(s) + 1 or any(a is not None and a != b
                                             for a, b in zip(s, got[1:])):
                want_text = ", ".join("T" if a is None else str(a) for a in s)
                raise DataError(f"data[{n!r}] has shape {got}; the model expects (batch"
                                + (f", {want_text})" if s else ")")
                                + (" with T time steps" if None in s else ""))
            if batch is None:
                batch = got[0]
            elif got[0] != batch:
                raise DataError(f"data[{n!r}] holds {got[0]} examples, the arrays before it "
                                f"{batch}")


def tied(gen: Any, g: Params) -> Params:
    """Autodiff treats W[i,j] and W[j,i] as two numbers; a symmetric parameter has one
    learned copy per pair, whose gradient is G + G^T - diag(G) (as the derived rules give)."""
    return {k: (v + v.T - jnp.diag(jnp.diag(v)) if k in gen.INFO.symmetric else v)
            for k, v in g.items()}


def untied(gen: Any, g: Params) -> Params:
    """The inverse of `tied` for a symmetric G: the derivative by each entry on its own."""
    return {k: ((v + jnp.diag(jnp.diag(v))) / 2 if k in gen.INFO.symmetric else v)
            for k, v in g.items()}


def label_hits(pred: Any, labels: jax.Array) -> jax.Array:
    """Correct predictions against class labels (0 for arrays to fit, or no prediction)."""
    if pred is None or labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        return jnp.asarray(0)
    return jnp.sum(jnp.argmax(pred, -1) == labels)


def hits(pred: Any, data: Batch, targets: Any) -> jax.Array:
    """Correct predictions in a batch: argmax of the prediction vs argmax of the target
    (0 when the cost names no vector output)."""
    target = next(iter(data[t] for t in targets))
    if pred is not None and pred.ndim == 2 and target.ndim == 2:
        return jnp.sum(jnp.argmax(pred, -1) == jnp.argmax(target, -1))
    return jnp.asarray(0)


def first_bad(traj: dict) -> tuple[int, str] | None:
    """(step, state) of the first NaN/inf in a trajectory (leading axis = step), or None."""
    import numpy as np
    for name, v in traj.items():
        ok = np.asarray(jnp.all(jnp.isfinite(v.reshape(v.shape[0], -1)), axis=1))
        if not ok.all():
            return int(np.argmin(ok)), name
    return None


def first_nonfinite(g: Params) -> str | None:
    """The first parameter whose gradient holds NaN or inf, or None."""
    import numpy as np
    return next((k for k, v in g.items() if not np.all(np.isfinite(np.asarray(v)))), None)
