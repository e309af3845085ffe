"""Replace one method of one object, and put it back.

The stage tracers watch aiortc's sender, receiver and transports of one
session without touching their classes: Python looks a method up on the
instance before the class, so an attribute of the same name set on the
object intercepts every call made as ``obj.method(...)`` -- and only those
of that object. Other sessions, and every process that does not trace, run
aiortc's code as it is.
"""

from __future__ import annotations

from typing import Any, Callable


class InstanceHook:
    """``obj.name`` now calls ``make(original)``'s result; ``remove()`` undoes it."""

    def __init__(self, obj: Any, name: str, make: Callable[[Callable[..., Any]], Any]) -> None:
        if name in vars(obj):
            raise RuntimeError(f"{type(obj).__name__}.{name} is already hooked on this object")
        original = getattr(obj, name)
        if not callable(original):
            raise TypeError(f"{type(obj).__name__}.{name} is not callable")
        self._obj = obj
        self._name = name
        self.original: Callable[..., Any] = original
        setattr(obj, name, make(original))

    @property
    def installed(self) -> bool:
        return self._obj is not None

    def remove(self) -> None:
        """Back to the class's method; idempotent."""
        if self._obj is not None:
            vars(self._obj).pop(self._name, None)
            self._obj = None
