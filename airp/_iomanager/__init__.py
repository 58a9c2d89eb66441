"""Layer 3, the I/O manager: the requester's side (DESIGN.md, "Layers").

The device namespace and handles (``IoManager``, ``FileHandle``), building IRPs for read, write
and device control and their final stage (``Overlapped``), the ``IoBuild*Request`` helpers, IRP
pools, and loading driver plugins.

May import: anyio, the standard library, ``airp._machine``, ``airp._shell`` and other modules of
this package.  Never ``airp._tools``: a tracing monitor is passed in, typed by the machine's
``MonitorHooks`` protocol.
"""
