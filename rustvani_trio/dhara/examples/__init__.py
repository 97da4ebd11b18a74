"""Example flows shipped with the package (``pizza.json`` and its handlers)."""
