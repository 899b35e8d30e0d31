"""A LocMem Django cache whose chosen methods fail, or answer garbage: a
cache server that refuses writes, or a third-party backend that breaks
Django's cache API."""

from typing import ClassVar

from django.core.cache.backends.locmem import LocMemCache


class FlakyCache(LocMemCache):
    #: Method name -> what calling it does instead: an exception to raise,
    #: or a value to return. Set by the test, cleared after it.
    broken: ClassVar[dict] = {}

    def _maybe(self, name, real, *args, **kwargs):
        if name not in self.broken:
            return real(*args, **kwargs)
        what = self.broken[name]
        if isinstance(what, BaseException):
            raise what
        return what

    def get_many(self, *args, **kwargs):
        return self._maybe("get_many", super().get_many, *args, **kwargs)

    def set(self, *args, **kwargs):
        return self._maybe("set", super().set, *args, **kwargs)

    def add(self, *args, **kwargs):
        return self._maybe("add", super().add, *args, **kwargs)

    def delete(self, *args, **kwargs):
        return self._maybe("delete", super().delete, *args, **kwargs)
