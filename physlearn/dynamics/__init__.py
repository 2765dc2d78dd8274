"""Relaxation of states: gradient flow (diffrax), discrete updates, asynchronous blocks."""

from .methods import METHODS as METHODS
from .methods import RELAXATIONS as RELAXATIONS
from .relax import RelaxConfig as RelaxConfig
from .relax import Relaxer as Relaxer
from .relaxation import Relaxation as Relaxation
from .relaxation import RelaxInfo as RelaxInfo
