"""zoo: a plugin-based model zoo that exports PyTorch models to ONNX and proves them right.

The public API for plugin authors is re-exported here; see docs/plugins.md.
"""

from zoo.errors import ParameterError, ZooError
from zoo.hookspecs import hookimpl
from zoo.manager import load_zoo
from zoo.spec import Architecture, Dim, Exporter, Input, Output, Tolerance

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "Dim",
    "Exporter",
    "Input",
    "Output",
    "ParameterError",
    "Tolerance",
    "ZooError",
    "__version__",
    "hookimpl",
    "load_zoo",
]
