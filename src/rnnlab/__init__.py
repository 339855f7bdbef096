"""rnnlab: the systems of the recurrent-networks lecture, real, fast and analysable."""

__version__ = "0.1.0"

from .cells import *  # noqa: F401,F403  (temporary while layers are written)
