"""Layer 2, the async shell: where the IRP machine meets anyio (DESIGN.md, "Layers").

``call_driver`` and ``pass_down``, awaiting IRPs and forward-and-wait, the requester's side of
cancellation (the bounded wait after cancel, a task's IRP list), timeouts, ``send_irp``, and the
queues whose workers are tasks: StartIo lanes, KMDF-style IoQueues, and the device task group
they run in.

May import: anyio, the standard library, ``airp._machine`` and other modules of this package.
Never a higher layer.  Importing ``_call`` and ``_waiting`` installs the machine's hooks
(``Driver``'s pass-through dispatch, ``await irp`` on a pending IRP).
"""
