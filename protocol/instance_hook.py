"""Replace one method of one object, and put it back.

The stage tracers and the in-loop decoder change how one session's aiortc
objects behave without touching their classes: Python looks a method up on
the instance before the class, so an attribute of the same name set on the
object intercepts every call made as ``obj.method(...)`` -- and only those
of that object. Other sessions, and every process that does not use them,
run aiortc's code as it is.

Hooks stack: a second hook on the same method wraps the first, and removing
hooks in the reverse order puts back each one's predecessor.
"""

from __future__ import annotations

from typing import Any, Callable

_ABSENT = object()


class InstanceHook:
    """``obj.name`` now calls ``make(original)``'s result; ``remove()`` undoes it."""

    def __init__(self, obj: Any, name: str, make: Callable[[Callable[..., Any]], Any]) -> None:
        original = getattr(obj, name)
        if not callable(original):
            raise TypeError(f"{type(obj).__name__}.{name} is not callable")
        self._obj = obj
        self._name = name
        #: What the object itself held before (another hook), or nothing.
        self._previous = vars(obj).get(name, _ABSENT)
        self.original: Callable[..., Any] = original
        self._replacement = make(original)
        setattr(obj, name, self._replacement)

    @property
    def installed(self) -> bool:
        return self._obj is not None

    def remove(self) -> None:
        """Back to what was there before; idempotent.

        :raises RuntimeError: a later hook on the same method is still in place.
        """
        if self._obj is None:
            return
        attributes = vars(self._obj)
        if attributes.get(self._name) is not self._replacement:
            raise RuntimeError(f"{self._name}: remove the hooks made after this one first")
        if self._previous is _ABSENT:
            del attributes[self._name]
        else:
            attributes[self._name] = self._previous
        self._obj = None
