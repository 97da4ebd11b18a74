"""The package's exceptions share one root, :class:`RustvaniError`.

``except rustvani_trio.RustvaniError`` catches every error the package raises on purpose. Each
error also keeps the built-in base that describes it (``ValueError`` for bad values,
``RuntimeError`` for misuse), so code that catches those goes on working.
"""

from __future__ import annotations

__all__ = ["RustvaniError"]


class RustvaniError(Exception):
    """The root of every exception raised on purpose by rustvani-trio."""
