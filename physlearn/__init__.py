"""physlearn: physics-first models of learning machines -> derived rules -> JAX code.

    model = physlearn.load("models/hopfield_mlp.phl")
    print(model.report())                 # derived dynamics, gradients, EP updates
    gen = model.compile({"n_h": 100})     # a module of jit-compatible jnp functions
    physlearn.check(model)                # derivatives vs jax.grad in float64
    problem = physlearn.problem(model, {"n_h": 100})
    g, aux = physlearn.gradient(problem, "ep-centered", params, batch, beta=0.1)
    physlearn.train(model, data, epochs=5)
"""

__version__ = "0.1.0"

from .api import algorithm as algorithm
from .api import algorithms as algorithms
from .api import evaluate as evaluate
from .api import gradient as gradient
from .api import problem as problem
from .api import train as train
from .check import check as check
from .errors import DataError as DataError
from .errors import OptionError as OptionError
from .errors import PhyslearnError as PhyslearnError
from .errors import TrainingError as TrainingError
from .errors import Unsupported as Unsupported
from .language.errors import ModelError as ModelError
from .model import Model as Model
from .model import compile as compile
from .model import load as load
from .model import loads as loads
