"""`ModelInfo`: how a generated module describes itself (inlined by source as `INFO`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """Everything a trainer or checker needs to know about a generated module.

    Shapes are tuples of dim names, sized by `dims`. Trajectory models (hamiltonian,
    lagrangian) fill the fields after `relax`; the others leave them empty.
    """

    model: str  # the model's name
    kind: str  # the physics: energy, primitive, hamiltonian, lagrangian or chain
    sign: float  # +1 when relaxation lowers the physics (E, H), -1 when it raises it (Phi)
    flows: bool  # states follow ds/dt = -dE/ds (the module has `dynamics`)
    relaxations: tuple  # the relaxation methods that fit, the default first
    physics_name: str  # E, Phi or H (a Lagrangian model's H is its Legendre transform)
    cost_name: str
    output: str | None  # the state or `let` the cost scores (the prediction), if one
    output_is_state: bool
    layers: tuple | None  # (even, odd) state blocks when the couplings are layered
    dims: dict  # dim -> size
    inputs: dict  # name -> shape, per example
    targets: dict
    states: dict
    params: dict
    consts: dict  # constants, index arrays and given initial states (`init:<state>`)
    given: dict  # values that come with the data: name -> role
    indexes: dict  # index array -> the dim its entries point into
    inits: dict  # name -> (init kind, args) from `init =`
    symmetric: tuple  # symmetric matrices: one learned copy per pair
    nonnegative: tuple  # parameters projected onto >= 0 after each update
    learn: dict  # the `learn` line (method and options), or the kind's default
    relax: dict  # the `relax` line, or the kind's default
    stack: dict | None = None  # `stack HSSM(...)`
    conjugate: dict | None = None  # momentum -> position
    time_varying: tuple = ()  # inputs that change along the trajectory
    cost_inputs: tuple = ()  # time-varying inputs the cost reads
    cost_final: bool = False  # the cost scores the final state only
    structure: dict | None = None  # separable, time_reversible, ...: True or False
    lagrangian_name: str | None = None
    blocks: dict | None = None  # a chain's blocks: name -> file, dims, inputs, states
    detached: bool = False  # the physics reads detach(...): its flow is no gradient
    binary: tuple = ()  # parameters read as sign(hidden weight) (straight-through gradient)
    network: dict | None = None  # a feed-forward network: layers, feedbacks, who reads what
