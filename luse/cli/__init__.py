"""The ``luse`` command: ``main`` dispatches, one module per command. Library code lives elsewhere."""
