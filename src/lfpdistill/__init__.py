"""lfpdistill: cross-modal knowledge distillation from spike transformers to LFP transformers."""

from .errors import LfpDistillError
from .session import Session

__version__ = "0.1.0"
__all__ = ["LfpDistillError", "Session", "__version__"]
