"""Driver plugins: drivers published by any installed distribution under one entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .._machine._misuse import must_be

__all__ = ["DRIVER_ENTRY_POINT_GROUP", "available_drivers", "load_driver"]

#: Distributions publish drivers as ``[project.entry-points."airp.drivers"] name = "module:Class"``.
DRIVER_ENTRY_POINT_GROUP = "airp.drivers"


def available_drivers() -> dict[str, EntryPoint]:
    """The installed driver plugins, by name."""
    return {ep.name: ep for ep in entry_points(group=DRIVER_ENTRY_POINT_GROUP)}


def load_driver(name: str) -> Any:
    """Load the driver plugin *name* and return what its entry point names (usually a class).

    :raises LookupError: if no installed distribution publishes a driver of that name; the message
        lists the names that are available.
    :raises TypeError: if *name* is not a str.
    """
    if not isinstance(name, str):
        raise must_be("load_driver(name): name", "a driver plugin name (str)", name)
    drivers = available_drivers()
    try:
        entry = drivers[name]
    except KeyError:
        known = ", ".join(sorted(drivers)) or "none installed"
        raise LookupError(f"no airp driver plugin named {name!r} (available: {known})") from None
    return entry.load()
