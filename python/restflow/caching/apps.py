"""The ``restflow.caching`` Django app: add it to ``INSTALLED_APPS``.

Its ``ready()`` registers every invalidation rule of the project
(:meth:`CacheRegister.auto_discover <restflow.caching.registry.CacheRegistry.auto_discover>`),
so that a process that changes a model has the rules of cached functions
it never imported itself: with a shared store (Redis), another process may
hold the entries. Celery workers also find the invalidation task through it.
"""

from django.apps import AppConfig


class RestflowCachingConfig(AppConfig):
    name = "restflow.caching"
    label = "restflow_caching"
    verbose_name = "restflow caching"

    def ready(self) -> None:
        from restflow.caching.registry import CacheRegister

        CacheRegister.auto_discover()
