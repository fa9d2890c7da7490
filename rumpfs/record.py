"""A base for small value classes that were dataclasses.

The dataclasses module alone (it imports inspect) costs more start-up than
packing a small tree, so such classes are plain classes with ``__slots__``
and an explicit ``__init__``; this base gives them what ``@dataclass`` did:
equality by field values (the fields are the ``__slots__``, in order) and a
repr.  Like a dataclass that is not frozen, a record is not hashable.
"""

from __future__ import annotations


class Record:
    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}("
                + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")")
