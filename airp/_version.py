"""The version of airp, in the one module that every layer may import (it imports nothing)."""

__version__ = "0.1.0"
