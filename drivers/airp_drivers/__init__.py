"""Example driver plugins for airp, installed as the ``airp_drivers`` package.

Each is registered in the ``airp.drivers`` entry-point group, so ``airp demo`` and applications
can find drivers by name with :func:`airp.load_driver`.
"""
