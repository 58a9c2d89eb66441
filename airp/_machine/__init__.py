"""Layer 1, the IRP machine: sans-I/O, synchronous, no event loop (DESIGN.md, "Layers").

Status codes and function codes, bug checks, the IRP and its stack locations, the completion
walk, the cancel protocol and cancel-safe queues, device objects, file objects and the driver
table, device queues (KDEVICE_QUEUE), and the bookkeeping of IRP allocation and associated IRPs.

May import: the standard library and other modules of this package, nothing else.  Never anyio,
trio or sniffio, and never a higher layer, not even for type checking.  Where the machine must
call up (awaiting a pending IRP, a pass-through driver's default dispatch, a tracing monitor), it
calls a hook that a higher layer installs or passes in (see ``_irp``, ``_driver``, ``_monitor``).
"""
