"""A cached function the restflow.caching app finds by itself (auto_discover)."""

from restflow.caching import cache_result
from restflow.caching.rules import InvalidationRule

from .models import Article


@cache_result(ttl=None, invalidates_on=[InvalidationRule(Article, field_mapping={"pk": "pk"})])
def discovered_title(pk):
    return Article.objects.filter(pk=pk).values_list("title", flat=True).first()
