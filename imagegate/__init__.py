"""The ``imagegate`` command: the composition root that wires ``api`` and ``worker`` together.

It is the only package that imports both: embedded mode runs the worker inside the API process.
"""
