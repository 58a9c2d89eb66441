"""Layer 4, the tools around airp (DESIGN.md, "Layers").

Tracing (``IrpMonitor``), the ``airp`` command line and its demo; the verifier and the simulator
belong here too.

May import: anything below (``airp._machine``, ``airp._shell``, ``airp._iomanager``), anyio and
the standard library.  Nothing below imports this package.
"""
