"""A base for the small immutable value classes of the object writer.

:class:`~rumpfs.elf.targets.Target`, :class:`~rumpfs.elf.templates.Template`
and :class:`~rumpfs.elf.component.Component` were frozen dataclasses; the
dataclasses module alone (it imports inspect) costs more start-up than
writing a small object, so they are plain classes with ``__slots__`` and an
explicit ``__init__`` (which sets each field with ``object.__setattr__``),
and this base adds to :class:`~rumpfs.record.Record` what
``@dataclass(frozen=True)`` did besides: assignment refused, a hash by field
values, and :meth:`replace` (``dataclasses.replace``).
"""

from __future__ import annotations

from ..record import Record


class Frozen(Record):
    """Fields are the subclass's ``__slots__``, in order; its ``__init__``
    takes each field as a keyword of the same name."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable: cannot assign {name!r} "
                             f"(use replace())")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())

    def replace(self, **changes):
        """A copy with ``changes`` applied (as ``dataclasses.replace``)."""
        values = dict(zip(self.__slots__, self._values()))
        unknown = changes.keys() - values.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field "
                            f"{', '.join(sorted(unknown))}")
        values.update(changes)
        return type(self)(**values)
