"""Model files -> checked syntax tree (parse, names, shapes), with positioned errors."""

from .errors import ModelError as ModelError
from .errors import Span as Span
from .parser import parse as parse
