"""The functions a model may call, with their arity; the symbolic layer gives their maths."""

# Elementwise functions: name -> number of arguments.
ELEMENTWISE = {
    "clip": 3, "hardsigmoid": 1, "sigmoid": 1, "tanh": 1, "relu": 1, "softplus": 1,
    "exp": 1, "log": 1, "logcosh": 1, "abs": 1, "sqrt": 1, "sin": 1, "cos": 1, "step": 1,
    "step_ste": 1, "sign_ste": 1,
    "square": 1, "detach": 1,
}

# Whole-tensor functions: arguments are bare names of equal shape; result is a scalar.
WHOLE_TENSOR = {"crossentropy": 2, "squared_error": 2}

REDUCTIONS = ("sum", "logsumexp")

ROLES = ("input", "target", "state", "param", "const")
# Roles whose values differ per example (they carry the batch axis in generated code).
BATCHED_ROLES = ("input", "target", "state")

INIT_KINDS = {"number": 1, "zeros": 0, "ones": 0, "normal": (1, 2), "uniform": 2,
              "glorot": 0, "fan_in": 0}

# Optimizer options every method takes: meta (metaplasticity of `binary` parameters),
# gamma and threshold (the bop optimizer's; + threshold_<param>).
OPTIMIZER_OPTIONS = {"meta", "gamma", "threshold"}
LEARN_METHODS = {"EP": {"beta", "nudging", "lr", "optimizer", "n_nudges"} | OPTIMIZER_OPTIONS,
                 "RHEL": {"epsilon", "lr", "optimizer"} | OPTIMIZER_OPTIONS,
                 "GLEP": {"epsilon", "lr", "optimizer", "boundary"} | OPTIMIZER_OPTIONS,
                 # spiking units on a primitive model's rates (physlearn/learning/algorithms/
                 # eqspike.py); trace: the spike traces' rate per step
                 "EqSpike": {"beta", "nudging", "lr", "optimizer", "trace"} | OPTIMIZER_OPTIONS,
                 # feed-forward networks (`layer`s): difference target propagation with
                 # learned feedbacks (noise: the reconstruction loss's), or backprop
                 "DTP": {"beta", "noise", "lr", "optimizer"} | OPTIMIZER_OPTIONS,
                 "BP": {"lr", "optimizer"} | OPTIMIZER_OPTIONS}
# Allowed words for word-valued options.
OPTION_WORDS = {"nudging": ("positive", "negative", "centered", "scaled", "holomorphic"),
                "optimizer": ("sgd", "momentum", "adam", "bop"),
                "boundary": ("echo", "initial"),
                "scan": ("sequential", "parallel"),
                "pool": ("mean", "last")}
# Where a method takes fewer of those words: {(method, option): words}.
METHOD_WORDS = {("EqSpike", "nudging"): ("positive", "centered")}
# A Hamiltonian core stacked into a deep network (see physlearn/learning/hssm.py).
STACK_METHODS = {"HSSM": {"blocks", "inputs", "pool"}}
# Which methods fit which physics: see each kind in physlearn/physics/.
RELAX_METHODS = {
    "gradient_flow": {"dt", "free_steps", "nudged_steps", "tol", "max_steps"},
    # energies: L-BFGS (optimistix) until max |dE/ds| < tol
    "minimize": {"tol", "max_steps"},
    "fixed_point": {"free_steps", "nudged_steps", "tol", "max_steps"},
    "asynchronous": {"free_steps", "nudged_steps", "tol", "max_steps"},
    # Hamiltonian models: one drift-kick-drift step per input sample; `scan = parallel`
    # runs a diagonal quadratic H as an associative scan
    "leapfrog": {"dt", "scan"},
    # any H: diffrax's adaptive Tsit5 over each input step (not time-symmetric: bptt only)
    "adaptive": {"dt", "tol", "max_steps"},
}
