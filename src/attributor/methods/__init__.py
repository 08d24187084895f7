"""Attribution methods, registered by name (``attributor methods`` lists them)."""

from attributor.methods.base import Method, TrainingContext, get_method, method_names
from attributor.methods.trak import TRAK

__all__ = ["Method", "TRAK", "TrainingContext", "get_method", "method_names"]
