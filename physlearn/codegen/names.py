"""Python names for model names in generated code: no clash with keywords or our own."""

import keyword

# Names the generated module defines itself; model names that collide get a suffix.
_MODULE_NAMES = {
    "jax", "jnp", "diffrax", "eqx", "physics", "energy", "primitive", "cost", "grad_states",
    "grad_params", "grad_cost_states", "grad_cost_params", "dynamics", "update", "relax",
    "vector_field", "init_params", "init_states", "project", "params", "states", "data",
    "beta", "batch_size", "g", "gc", "key", "dtype", "steps", "dt", "sol", "keys",
    "MODEL", "KIND", "DIMS", "INPUTS", "TARGETS", "STATES", "PARAMS", "CONSTS", "SYMMETRIC",
    "NONNEGATIVE", "LEARN", "RELAX", "PHYSICS_NAME", "COST_NAME", "logcosh", "sigmoid_prime",
    "tanh_prime", "symmetrize", "prediction", "_init_array", "OUTPUT", "OUTPUT_IS_STATE",
    "LAYERS", "INITS", "LAGRANGIAN_NAME", "shifted", "inside", "lagrangian", "velocities", "hamilton",
    "leapfrog", "grad_inputs", "grad_lagrangian_params", "CONJUGATE", "TIME_VARYING",
    "STACK", "adaptive_step", "COST_INPUTS", "window", "window_add", "window_positions", "window_tiling",
    "scatter_add", "chosen", "conv", "conv_transpose", "conv_kernel_grad", "GIVEN", "INDEXES", "_given_array",
}


def pyname(name: str) -> str:
    name = name.replace("'", "_prime").replace("/", "_").replace("+", "_plus").replace("-", "_minus")
    if keyword.iskeyword(name) or name in _MODULE_NAMES:
        return name + "_"
    return name
