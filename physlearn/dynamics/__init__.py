"""Relaxation of states: gradient flow (diffrax), discrete updates, asynchronous blocks."""

from .relax import RelaxConfig as RelaxConfig
from .relax import Relaxer as Relaxer
