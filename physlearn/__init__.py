"""physlearn: physics-first models of learning machines -> derived rules -> JAX code.

    model = physlearn.load("models/hopfield_mlp.phl")
    print(model.report())                 # derived dynamics, gradients, EP updates
    gen = model.compile({"n_h": 100})     # a module of jit-compatible jnp functions
    physlearn.check(model)                # derivatives vs jax.grad in float64
"""

__version__ = "0.1.0"

from .check import check as check  # noqa: E402
from .language.errors import ModelError as ModelError  # noqa: E402
from .model import Model as Model, compile as compile, load as load, loads as loads  # noqa: E402
