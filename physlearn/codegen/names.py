"""Python names for model names in generated code: no clash with keywords or our own."""

import keyword

# Names the generated module defines itself; model names that collide get a suffix.
_MODULE_NAMES = {
    "jax", "jnp", "diffrax", "eqx", "dataclass", "physics", "energy", "primitive", "cost",
    "grad_states", "grad_params", "grad_cost_states", "grad_cost_params", "dynamics", "update",
    "relax", "vector_field", "init_params", "init_states", "project", "params", "states",
    "data", "beta", "batch_size", "g", "gc", "key", "dtype", "steps", "dt", "sol", "keys",
    "INFO", "ModelInfo", "logcosh", "sigmoid_prime", "tanh_prime", "symmetrize", "prediction",
    "shifted", "inside", "lagrangian", "velocities", "hamilton", "leapfrog", "grad_inputs",
    "grad_lagrangian_params", "adaptive_step", "tol", "given", "blocks",
}


def _runtime_names() -> set[str]:
    from ..symbolic.functions import HELPERS
    return set(HELPERS)


def pyname(name: str) -> str:
    name = (name.replace("'", "_prime").replace("/", "_").replace("+", "_plus")
            .replace("-", "_minus").replace(".", "_"))
    if keyword.iskeyword(name) or name in _MODULE_NAMES or name in _runtime_names():
        return name + "_"
    return name
