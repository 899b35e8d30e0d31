"""One rule on Article, keyed by a value that is not the primary key."""

from restflow.caching import cache_result
from restflow.caching.rules import InvalidationRule
from tests.testapp.models import Article


@cache_result(
    ttl=None, invalidates_on=[InvalidationRule(Article, field_mapping={"views": "views"})]
)
def by_views(views):
    return f"articles with {views} views"
