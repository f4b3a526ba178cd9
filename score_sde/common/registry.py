"""One generic name -> object registry, used for SDEs, models, predictors and correctors.

Configs are data: they name things (``config.training.sde = 'vesde'``), and a registry maps the
name to the class. A wrong name fails at once and lists the names that exist, so a typo in a
config never reaches a training run.
"""
from typing import Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A case-insensitive mapping from names to objects, filled with the ``register`` decorator.

  >>> SDES = Registry('SDE')
  >>> @SDES.register('vesde')
  ... class VESDE: ...
  >>> SDES.get('VESDE') is VESDE
  True
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    key = name.lower()

    def decorator(obj: T) -> T:
      if key in self._entries and self._entries[key] is not obj:
        raise ValueError(f"{self.kind} {name!r} is registered twice.")
      self._entries[key] = obj
      return obj

    return decorator

  def get(self, name: str) -> T:
    try:
      return self._entries[str(name).lower()]
    except KeyError:
      raise KeyError(
          f"Unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}.") from None

  def __contains__(self, name: str) -> bool:
    return str(name).lower() in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(sorted(self._entries))

  def names(self):
    return sorted(self._entries)
