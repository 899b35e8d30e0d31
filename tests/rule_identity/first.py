"""Two rules: the one on Article is second in the list (position 1)."""

from restflow.caching import cache_result
from restflow.caching.rules import InvalidationRule
from tests.testapp.models import Article, Comment

SEEN = []


def record(wrapper, instance, signal_type):
    SEEN.append((instance.pk, str(signal_type)))


@cache_result(
    ttl=None,
    invalidates_on=[
        InvalidationRule(Comment, field_mapping={"article_id": "article_id"}),
        InvalidationRule(Article, field_mapping={"article_id": "pk"}),
    ],
)
def article_summary(article_id):
    return f"summary of {article_id}"


@cache_result(ttl=None, invalidates_on=[InvalidationRule(Article, invalidator=record)])
def front_page():
    return "front page"
