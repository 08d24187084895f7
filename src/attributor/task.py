"""Deprecated location: the Task contract moved to :mod:`attributor.tasks`."""
from attributor.tasks import *  # noqa: F401,F403
from attributor.tasks import __all__  # noqa: F401
