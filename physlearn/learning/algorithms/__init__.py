"""The learning algorithms, one module each; every module here registers itself.

Adding an algorithm is adding a file: it is imported (in name order) the first time the
registry is read.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
