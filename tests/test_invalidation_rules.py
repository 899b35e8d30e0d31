"""InvalidationRule against real saves and deletes on SQLite (issue 6).

Every test commits for real (``transactional_db``), so ``on_commit`` runs
as in production: at once outside ``atomic``, at the end of the block inside.
"""

import json
import logging
import threading

import pytest
from asgiref.sync import async_to_sync
from django.db import transaction
from django.test import override_settings
from django.urls import URLResolver
from django.urls.resolvers import RegexPattern
from rest_framework import viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.test import APIRequestFactory

from restflow.caching import CACHE_MISSING, ArgsKeyField, KeyConstructor, cache_result
from restflow.caching import rules as rules_module
from restflow.caching.cache_response import cache_response
from restflow.caching.dispatchers import Dispatcher, ThreadPoolDispatcher, register_dispatcher
from restflow.caching.dispatchers.jobs import SignalTypes
from restflow.caching.registry import CacheRegister
from restflow.caching.rules import InvalidationRule
from restflow.caching.tasks import run_cache_rules
from tests.testapp.models import Article, Comment, FeaturedArticle, ReviewedArticle, Tag

pytestmark = pytest.mark.django_db(transaction=True)

INVALIDATED = []


def record_invalidation(wrapper, instance):
    """An invalidator named by its dotted path."""
    INVALIDATED.append(instance.pk)
    wrapper.invalidate_all()


@pytest.fixture(autouse=True)
def _forget_rules():
    INVALIDATED.clear()
    yield
    ThreadPoolDispatcher.join(5)
    CacheRegister.clear()


def cached_title(**options):
    """A cached title lookup with one rule on Article (``options``), and its calls."""
    calls = []
    options.setdefault("field_mapping", {"article_id": "pk"})

    @cache_result(ttl=None, invalidates_on=[InvalidationRule(Article, **options)])
    def title(article_id):
        calls.append(article_id)
        return Article.objects.filter(pk=article_id).values_list("title", flat=True).first()

    return title, calls


def target_of(wrapper):
    path = f"{wrapper.__module__}.{wrapper.__qualname__}"
    status = CacheRegister.get_status()["models"]
    return [r["target"] for rules in status.values() for r in rules if r["function"] == path]


def logged(caplog, text):
    return sum(text in record.getMessage() + str(record.exc_info) for record in caplog.records)


# -- field_mapping: what a change drops ------------------------------------------


def test_a_save_drops_the_exact_entry_and_no_other():
    title, _ = cached_title()
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    assert (title(a.pk), title(b.pk)) == ("a", "b")
    assert target_of(title) == ["entry"]

    a.title = "a2"
    a.save()

    assert title.get_cache_only(a.pk) is CACHE_MISSING
    assert title.get_cache_only(b.pk) == "b"
    assert title(a.pk) == "a2"


def test_inside_atomic_the_entry_goes_at_commit_and_a_rollback_drops_nothing():
    title, _ = cached_title()
    a = Article.objects.create(title="a")
    title(a.pk)

    with transaction.atomic():
        a.title = "a2"
        a.save()
        # Dropped now, a reader in another transaction would cache "a" again.
        assert title.get_cache_only(a.pk) == "a"
    assert title.get_cache_only(a.pk) is CACHE_MISSING

    title(a.pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        a.title = "rolled back"
        a.save()
        raise RuntimeError
    assert title.get_cache_only(a.pk) == "a2"


# --- cache_response views served through a router -------------------------------------


def routed_articles():
    """A ViewSet whose retrieve is cached with a rule (made per test: the
    fixture forgets every rule after each)."""

    class RoutedArticles(viewsets.ViewSet):
        renderer_classes = (JSONRenderer,)

        @cache_response(
            ttl=None,
            set_cache_headers=True,
            invalidates_on=[InvalidationRule(Article, field_mapping={"pk": "pk"})],
        )
        def retrieve(self, request, pk=None):
            return Response({"title": Article.objects.get(pk=pk).title})

    return RoutedArticles


def routed(viewset, path):
    """``path`` served as a project's urls.py would: through a DRF router,
    whose ``(?P<pk>[^/.]+)`` hands the view ``pk`` as text."""
    router = SimpleRouter()
    router.register("articles", viewset, basename="routed-article")
    match = URLResolver(RegexPattern(r"^/"), router.urls).resolve(path)
    assert match.kwargs == {"pk": path.strip("/").rpartition("/")[2]}  # text, not an int
    response = match.func(APIRequestFactory().get(path), *match.args, **match.kwargs)
    return response["X-Cache-status"], json.loads(response.content)["title"]


def test_a_rule_drops_what_a_router_served_view_cached():
    # The rule reads pk 3 (an int) from the row; the router gave the view "3".
    viewset = routed_articles()
    a = Article.objects.create(title="old")
    path = f"/articles/{a.pk}/"
    assert [routed(viewset, path) for _ in range(2)] == [("MISS", "old"), ("HIT", "old")]
    a.title = "new"
    a.save()
    assert routed(viewset, path) == ("MISS", "new")
    assert routed(viewset, path) == ("HIT", "new")
    viewset.retrieve.delete_by_prefix(pk=a.pk)  # an int reaches it too
    assert routed(viewset, path) == ("MISS", "new")


# --- many-to-many changes (m2m_changed only: neither row is saved) ------------------


def tag_lookups():
    """An article's tag names and a tag's article titles, each cached with a
    rule on the link table, and the same with rules on each side's model."""

    @cache_result(
        ttl=None,
        invalidates_on=[
            # A link added is a row created, as a Comment.objects.create() is.
            InvalidationRule(
                Tag.articles.through,
                field_mapping={"article_id": "article_id"},
                trigger_on_create=True,
            )
        ],
    )
    def tags_by_link(article_id):
        return sorted(Tag.objects.filter(articles=article_id).values_list("name", flat=True))

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"article_id": "pk"}, watch_fields=["tags"])
        ],
    )
    def tags_by_article(article_id):
        return sorted(Tag.objects.filter(articles=article_id).values_list("name", flat=True))

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Tag, field_mapping={"tag_id": "pk"}, watch_fields=["articles"])
        ],
    )
    def titles_by_tag(tag_id):
        return sorted(Article.objects.filter(tags=tag_id).values_list("title", flat=True))

    return tags_by_link, tags_by_article, titles_by_tag


@pytest.mark.parametrize("side", ["forward", "reverse"])
def test_m2m_add_remove_and_clear_reach_rules_on_the_link_table_and_both_models(side):
    by_link, by_article, by_tag = tag_lookups()
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")

    def warm():
        return (by_link(a.pk), by_article(a.pk), by_tag(red.pk), by_link(b.pk), by_tag(blue.pk))

    if side == "forward":  # through the field Tag declares
        add, remove, clear = (
            (lambda: red.articles.add(a)),
            (lambda: red.articles.remove(a)),
            red.articles.clear,
        )
    else:  # through Article's reverse accessor
        add, remove, clear = (lambda: a.tags.add(red)), (lambda: a.tags.remove(red)), a.tags.clear

    assert warm() == ([], [], [], [], [])
    add()
    # a's and red's entries are dropped; b's and blue's are not theirs to drop.
    assert warm() == (["red"], ["red"], ["a"], [], [])
    remove()
    assert warm() == ([], [], [], [], [])
    add()
    assert warm() == (["red"], ["red"], ["a"], [], [])
    clear()
    assert warm() == ([], [], [], [], [])


def test_an_m2m_change_names_its_relation_for_watch_fields():
    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"article_id": "pk"}, watch_fields=["title"])
        ],
    )
    def title_only(article_id):
        return Article.objects.get(pk=article_id).title

    a, red = Article.objects.create(title="a"), Tag.objects.create(name="red")
    title_only(a.pk)
    a.tags.add(red)  # update_fields={"tags"}: not the title
    assert title_only.get_cache_only(a.pk) == "a"


def test_an_m2m_change_that_rolls_back_drops_nothing():
    by_link, by_article, by_tag = tag_lookups()
    a, red = Article.objects.create(title="a"), Tag.objects.create(name="red")
    assert (by_link(a.pk), by_article(a.pk), by_tag(red.pk)) == ([], [], [])

    with pytest.raises(RuntimeError), transaction.atomic():
        a.tags.add(red)
        raise RuntimeError

    assert by_link.get_cache_only(a.pk) == []
    assert by_article.get_cache_only(a.pk) == []
    assert by_tag.get_cache_only(red.pk) == []


@pytest.mark.parametrize("attribute", ["pk", "id"])
def test_a_delete_inside_atomic_still_invalidates(attribute):
    title, _ = cached_title(field_mapping={"article_id": attribute})
    a = Article.objects.create(title="a")
    pk = a.pk
    title(pk)

    with transaction.atomic():
        a.delete()
        assert a.pk is None  # what the older restflow read after the commit
    assert title.get_cache_only(pk) is CACHE_MISSING


def test_a_delete_outside_atomic_invalidates():
    title, _ = cached_title()
    a = Article.objects.create(title="a")
    pk = a.pk
    title(pk)
    a.delete()
    assert title.get_cache_only(pk) is CACHE_MISSING


def test_a_cascade_invalidates_through_the_foreign_key_column(django_assert_num_queries):
    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Comment, field_mapping={"article_id": "article.id"})],
    )
    def comment_count(article_id):
        return Comment.objects.filter(article_id=article_id).count()

    a = Article.objects.create(title="a")
    comment = Comment.objects.create(article=a, body="x")
    assert comment_count(a.pk) == 1

    # "article.id" is read from the article_id column: no query for the article.
    fresh = Comment.objects.get(pk=comment.pk)
    with django_assert_num_queries(0):
        assert CacheRegister.invalidate_instances(fresh) == 1
    assert comment_count.get_cache_only(a.pk) is CACHE_MISSING

    comment_count(a.pk)
    a.delete()  # deletes the comment in the cascade
    assert comment_count.get_cache_only(a.pk) is CACHE_MISSING


class ByArticle(KeyConstructor):
    article = ArgsKeyField("article_id", partition=True)
    page = ArgsKeyField(["page", "size"])


def test_a_mapping_onto_the_partition_drops_the_partition():
    @cache_result(
        ttl=None,
        key_constructor=ByArticle,
        invalidates_on=[
            InvalidationRule(
                Comment, field_mapping={"article_id": "article_id"}, trigger_on_create=True
            )
        ],
    )
    def comments_page(article_id, page=1, size=10):
        return list(Comment.objects.filter(article_id=article_id).values_list("body", flat=True))

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    comments_page(a.pk, 1)
    comments_page(a.pk, 2)
    comments_page(b.pk, 1)
    assert target_of(comments_page) == ["partition"]

    Comment.objects.create(article=a, body="new")

    assert comments_page.get_cache_only(a.pk, 1) is CACHE_MISSING
    assert comments_page.get_cache_only(a.pk, 2) is CACHE_MISSING
    assert comments_page.get_cache_only(b.pk, 1) == []


def test_a_mapping_of_every_argument_drops_one_entry_of_a_partition():
    class ByTitle(KeyConstructor):
        title = ArgsKeyField("title", partition=True)
        article = ArgsKeyField("article_id")

    @cache_result(
        ttl=None,
        key_constructor=ByTitle,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"title": "title", "article_id": "pk"})
        ],
    )
    def views(title, article_id):
        return Article.objects.get(pk=article_id).views

    a = Article.objects.create(title="same")
    b = Article.objects.create(title="same")
    views("same", a.pk)
    views("same", b.pk)
    assert target_of(views) == ["entry"]

    a.views = 5
    a.save()
    assert views.get_cache_only("same", a.pk) is CACHE_MISSING
    assert views.get_cache_only("same", b.pk) == 0


def test_the_partition_and_some_arguments_drop_the_partition():
    @cache_result(
        ttl=None,
        key_constructor=ByArticle,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"article_id": "pk", "page": "views"})
        ],
    )
    def page_of(article_id, page, size=10):
        return (article_id, page, size)

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    page_of(a.pk, 0, 10)
    page_of(a.pk, 0, 20)  # a size the mapping cannot name
    page_of(b.pk, 0)
    assert target_of(page_of) == ["partition"]

    a.save()
    assert page_of.get_cache_only(a.pk, 0, 10) is CACHE_MISSING
    assert page_of.get_cache_only(a.pk, 0, 20) is CACHE_MISSING
    assert page_of.get_cache_only(b.pk, 0) == (b.pk, 0, 10)


def test_an_argument_the_mapping_cannot_name_drops_the_whole_function():
    @cache_result(
        ttl=None, invalidates_on=[InvalidationRule(Article, field_mapping={"article_id": "pk"})]
    )
    def page_of(article_id, page=1):
        return (article_id, page)

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    page_of(a.pk, 1)
    page_of(a.pk, 2)  # the mapping cannot say which page: all must go
    page_of(b.pk, 1)
    assert target_of(page_of) == ["function"]

    a.save()
    assert page_of.get_cache_only(a.pk, 2) is CACHE_MISSING
    assert page_of.get_cache_only(b.pk, 1) is CACHE_MISSING


def test_a_mapped_none_is_a_value_like_any_other_unless_require_args_names_it():
    @cache_result(
        ttl=None, invalidates_on=[InvalidationRule(Article, field_mapping={"title": "title"})]
    )
    def by_title(title):
        return title

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, field_mapping={"title": "title"}, require_args=["title"])
        ],
    )
    def strict(title):
        return title

    by_title(None)
    strict(None)
    untitled = Article(title=None)  # never saved: the rules read it as it is
    assert CacheRegister.invalidate_instances(untitled) == 1
    assert by_title.get_cache_only(None) is CACHE_MISSING
    assert strict.get_cache_only(None) is None


def test_a_function_without_parameters_needs_no_mapping():
    @cache_result(ttl=None, invalidates_on=[InvalidationRule(Article)])
    def count():
        return Article.objects.count()

    assert count() == 0
    Article.objects.create(title="a").save()
    assert count.get_cache_only() is CACHE_MISSING
    assert count() == 1


def test_require_args_false_drops_every_entry():
    title, _ = cached_title(field_mapping=None, require_args=False)
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    title(a.pk)
    title(b.pk)
    a.save()
    assert title.get_cache_only(b.pk) is CACHE_MISSING


# -- mistakes fail at decoration ---------------------------------------------------


def test_a_rule_without_mapping_on_a_function_with_parameters_is_a_value_error():
    with pytest.raises(ValueError, match=r"field_mapping.*invalidator.*require_args=False"):
        cached_title(field_mapping=None)


def test_invalidator_and_field_mapping_together_are_a_value_error():
    with pytest.raises(ValueError, match="not both"):
        InvalidationRule(Article, field_mapping={"a": "pk"}, invalidator=record_invalidation)
    with pytest.raises(ValueError, match="rewarm"):
        InvalidationRule(Article, invalidator=record_invalidation, rewarm=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"field_mapping": {"nope": "pk"}}, "does not take"),
        ({"field_mapping": {"article_id": "nope"}}, "no field or attribute 'nope'"),
        ({"watch_fields": ["nope"]}, "watch_fields names 'nope'"),
        ({"invalidate_when": {"nope": 1}}, "no field or attribute 'nope'"),
        ({"dispatcher": "nope"}, None),
    ],
)
def test_bad_options_fail_at_decoration(options, message):
    if message is None:
        # A dispatcher name nobody registered fails when discovery checks it.
        cached_title(**options)
        CacheRegister._discovered = False
        with pytest.raises(ValueError, match="Unknown dispatcher 'nope'"):
            CacheRegister.auto_discover()
        return
    with pytest.raises(ValueError, match=message):
        cached_title(**options)


def test_bad_option_types_are_type_errors():
    for options in (
        {"field_mapping": {"a": ""}},
        {"invalidator": 42},
        {"invalidate_when": 3},
        {"watch_fields": [1]},
        {"rewarm": "yes"},
        {"raise_exception": 1},
        {"dispatcher_config": []},
    ):
        with pytest.raises(TypeError):
            InvalidationRule(Article, **options)
    # The model is checked when the rule is registered (issue 12: as in drf-restflow,
    # a rule may be made with a stand-in).
    with pytest.raises(TypeError, match="model class"):
        cache_result(invalidates_on=[InvalidationRule("Article", require_args=False)])(lambda: 1)
    with pytest.raises(TypeError, match="list of InvalidationRule"):
        cache_result(invalidates_on=InvalidationRule(Article))(lambda: 1)


# -- invalidator ---------------------------------------------------------------------


def test_the_invalidator_gets_the_wrapper_the_instance_and_the_extras_it_names():
    seen = []

    def only_signal(wrapper, instance, signal_type):
        seen.append(("only_signal", wrapper, instance.pk, signal_type))

    def everything(wrapper, instance, **extras):
        seen.append(("everything", sorted(extras), extras["instance_created"]))

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(Article, invalidator=only_signal, trigger_on_create=True),
            InvalidationRule(Article, invalidator=everything),
        ],
    )
    def feed():
        return "feed"

    a = Article.objects.create(title="a")
    assert seen == [("only_signal", feed, a.pk, SignalTypes.POST_SAVE)]
    seen.clear()
    a.save(update_fields=["title"])
    assert seen[1] == ("everything", ["instance_created", "signal_type", "update_fields"], False)

    seen.clear()
    pk = a.pk
    with transaction.atomic():
        a.delete()
    # The instance the invalidator gets after the commit still has its pk.
    assert seen[0] == ("only_signal", feed, pk, SignalTypes.POST_DELETE)


def test_a_dotted_path_invalidator_is_imported_lazily_and_once(monkeypatch):
    imports = []
    real = rules_module.importlib.import_module

    def counting(name, *args):
        if name == __name__:
            imports.append(name)
        return real(name, *args)

    monkeypatch.setattr(rules_module.importlib, "import_module", counting)
    rule = InvalidationRule(Article, invalidator=f"{__name__}.record_invalidation")

    @cache_result(ttl=None, invalidates_on=[rule])
    def feed():
        return "feed"

    assert imports == []
    feed()
    a = Article.objects.create(title="a")
    a.save()
    a.save()
    assert imports == [__name__]
    assert INVALIDATED == [a.pk, a.pk]
    assert feed.get_cache_only() is CACHE_MISSING
    assert rule.resolve_invalidator() is record_invalidation


def test_an_invalidator_path_that_does_not_import_is_logged_at_the_first_change(caplog):
    @cache_result(ttl=None, invalidates_on=[InvalidationRule(Article, invalidator="tests.nope.f")])
    def feed():
        return "feed"

    with caplog.at_level(logging.ERROR, logger="restflow.caching"):
        Article.objects.create(title="a").save()
    assert "No module named 'tests.nope'" in caplog.text


def test_an_async_invalidator_is_awaited():
    seen = []

    async def invalidator(wrapper, instance):
        seen.append(instance.pk)

    @cache_result(ttl=None, invalidates_on=[InvalidationRule(Article, invalidator=invalidator)])
    def feed():
        return "feed"

    a = Article.objects.create(title="a")
    a.save()
    assert seen == [a.pk]


# -- which changes count ----------------------------------------------------------------


def test_watch_fields_skip_saves_that_name_none_of_them():
    title, _ = cached_title(watch_fields=["title"])
    a = Article.objects.create(title="a")

    title(a.pk)
    a.views = 3
    a.save(update_fields=["views"])
    assert title.get_cache_only(a.pk) == "a"

    a.title = "a2"
    a.save(update_fields=["title", "views"])
    assert title.get_cache_only(a.pk) is CACHE_MISSING

    title(a.pk)
    a.save()  # a plain save may change anything
    assert title.get_cache_only(a.pk) is CACHE_MISSING

    title(a.pk)
    pk = a.pk
    a.delete()
    assert title.get_cache_only(pk) is CACHE_MISSING


def test_watch_fields_match_a_foreign_key_by_name_or_column():
    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(
                Comment, field_mapping={"article_id": "article_id"}, watch_fields=["article"]
            )
        ],
    )
    def count(article_id):
        return Comment.objects.filter(article_id=article_id).count()

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    comment = Comment.objects.create(article=a, body="x")
    count(b.pk)
    comment.article_id = b.pk
    comment.save(update_fields=["body"])
    assert count.get_cache_only(b.pk) == 0
    comment.save(update_fields=["article_id"])
    assert count.get_cache_only(b.pk) is CACHE_MISSING


def test_invalidate_when_is_evaluated_even_when_a_watched_field_changed():
    seen = []

    def popular(instance, signal_type):
        seen.append(signal_type)
        return instance.views > 10

    title, _ = cached_title(watch_fields=["title"], invalidate_when=popular)
    a = Article.objects.create(title="a")
    title(a.pk)

    a.title = "quiet"
    a.save(update_fields=["title"])  # watched, but not popular
    assert title.get_cache_only(a.pk) == "a"
    assert seen == [SignalTypes.POST_SAVE]

    a.views = 11
    a.save()
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_invalidate_when_accepts_the_older_dict_of_conditions():
    title, _ = cached_title(invalidate_when={"!title": "draft", "views": 0})
    a = Article.objects.create(title="draft")
    title(a.pk)
    a.save()
    assert title.get_cache_only(a.pk) == "draft"
    a.title = "published"
    a.save()
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_trigger_on_create():
    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, require_args=False, trigger_on_create=False)],
    )
    def ignores_creates(x=None):
        return Article.objects.count()

    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, require_args=False, trigger_on_create=True)],
    )
    def follows_creates(x=None):
        return Article.objects.count()

    ignores_creates()
    follows_creates()
    Article.objects.create(title="a")
    assert ignores_creates.get_cache_only() == 0
    assert follows_creates.get_cache_only() is CACHE_MISSING


def test_a_rule_follows_proxies_and_accepts_a_model_by_name():
    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule("testapp.Article", field_mapping={"article_id": "pk"})],
    )
    def title(article_id):
        return Article.objects.get(pk=article_id).title

    featured = FeaturedArticle.objects.create(title="a")
    title(featured.pk)
    featured.save()  # the signal's sender is FeaturedArticle
    assert title.get_cache_only(featured.pk) is CACHE_MISSING


def test_a_rule_on_a_proxy_follows_changes_made_through_its_concrete_model():
    # One table: a row saved or deleted as an Article is a FeaturedArticle row too.
    seen = []

    def when(instance):
        seen.append(instance.headline)  # the proxy's own property
        return True

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(
                FeaturedArticle,
                field_mapping={"article_id": "pk"},
                invalidate_when=when,
            )
        ],
    )
    def headline(article_id):
        return FeaturedArticle.objects.get(pk=article_id).headline

    @cache_result(ttl=None, invalidates_on=[InvalidationRule(FeaturedArticle, require_args=False)])
    def featured_count():
        return FeaturedArticle.objects.count()

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    assert (headline(a.pk), headline(b.pk), featured_count()) == ("A", "B", 2)
    a.title = "a2"
    a.save()
    assert headline.get_cache_only(a.pk) is CACHE_MISSING
    assert headline.get_cache_only(b.pk) == "B"
    assert featured_count.get_cache_only() is CACHE_MISSING
    assert seen == ["A2"]
    assert (headline(a.pk), featured_count()) == ("A2", 2)
    b.delete()
    assert featured_count.get_cache_only() is CACHE_MISSING
    assert featured_count() == 1
    # Not twice for a save through the proxy itself.
    FeaturedArticle.objects.get(pk=a.pk).save()
    assert seen == ["A2", "B", "A2"]


def test_a_rule_on_a_child_model_follows_saves_made_through_its_parent():
    # Multi-table inheritance: the title is the parent's column, so saving
    # the row as an Article changes the ReviewedArticle; Django names only
    # Article as the sender.
    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(ReviewedArticle, field_mapping={"article_id": "pk"}, rewarm=True)
        ],
    )
    def review(article_id):
        found = ReviewedArticle.objects.get(pk=article_id)
        calls.append(article_id)
        return (found.title, found.score)

    calls = []
    reviewed = ReviewedArticle.objects.create(title="a", score=3)
    plain = Article.objects.create(title="p")
    assert review(reviewed.pk) == ("a", 3)
    as_article = Article.objects.get(pk=reviewed.pk)
    as_article.title = "a2"
    as_article.save()
    assert review.get_cache_only(reviewed.pk) == ("a2", 3)  # rewarmed
    assert calls == [reviewed.pk, reviewed.pk]
    # An Article that is no ReviewedArticle runs nothing.
    plain.save()
    assert calls == [reviewed.pk, reviewed.pk]
    reviewed.refresh_from_db()
    reviewed.score = 4
    reviewed.save()  # through the child itself: rewarmed once
    assert review.get_cache_only(reviewed.pk) == ("a2", 4)
    assert calls == [reviewed.pk] * 3


# -- rewarm ------------------------------------------------------------------------------
# The rewarm tests taking ``store`` run on every store (tests/stores.py): on a
# shared one the rewarmed value is serialized, so an un-awaited coroutine
# could not even be stored there.


def test_rewarm_recomputes_a_cached_entry_in_place(store):
    title, calls = cached_title(rewarm=True)
    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    title(a.pk)

    a.title = "a2"
    a.save()
    assert calls == [a.pk, a.pk]
    assert title.get_cache_only(a.pk) == "a2"  # readers never miss

    b.save()  # not cached: nothing to rewarm
    assert calls == [a.pk, a.pk]

    pk = a.pk
    a.delete()  # a deleted row has nothing to recompute
    assert title.get_cache_only(pk) is CACHE_MISSING
    assert calls == [pk, pk]


def test_a_rewarm_that_fails_drops_the_entry_and_is_logged(caplog):
    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, field_mapping={"article_id": "pk"}, rewarm=True)],
    )
    def title(article_id):
        value = Article.objects.get(pk=article_id).title
        if value == "boom":
            raise RuntimeError("cannot render boom")
        return value

    a = Article.objects.create(title="a")
    title(a.pk)
    a.title = "boom"
    with caplog.at_level(logging.ERROR, logger="restflow.caching"):
        a.save()
    assert "cannot render boom" in caplog.text
    assert title.get_cache_only(a.pk) is CACHE_MISSING


def test_rewarm_of_a_partition_drops_it_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="restflow.caching"):

        @cache_result(
            ttl=None,
            key_constructor=ByArticle,
            invalidates_on=[
                InvalidationRule(Article, field_mapping={"article_id": "pk"}, rewarm=True)
            ],
        )
        def page_of(article_id, page=1, size=10):
            return (article_id, page)

    assert logged(caplog, "drops the partition instead of recomputing one entry") == 1

    a = Article.objects.create(title="a")
    page_of(a.pk, 1)
    page_of(a.pk, 2)
    a.save()
    assert page_of.get_cache_only(a.pk, 1) is CACHE_MISSING
    assert page_of.get_cache_only(a.pk, 2) is CACHE_MISSING


class ByUser(KeyConstructor):
    user_id = ArgsKeyField("user_id", partition=True)


def test_rewarm_recomputes_an_entry_keyed_only_by_its_partition(store):
    """The documented case: the mapping names all the key reads, which is
    the partition; that one entry is recomputed, not dropped."""
    calls = []

    @cache_result(
        ttl=None,
        key_constructor=ByUser,
        invalidates_on=[InvalidationRule(Article, field_mapping={"user_id": "pk"}, rewarm=True)],
    )
    def title(user_id):
        calls.append(user_id)
        return Article.objects.filter(pk=user_id).values_list("title", flat=True).first()

    a, b = Article.objects.create(title="a"), Article.objects.create(title="b")
    assert (title(a.pk), title(b.pk)) == ("a", "b")
    assert target_of(title) == ["entry"]
    a.title = "a2"
    a.save()
    assert title.get_cache_only(a.pk) == "a2"  # readers never miss
    assert title.get_cache_only(b.pk) == "b"
    assert calls == [a.pk, b.pk, a.pk]


def test_rewarm_of_an_async_function_stores_the_awaited_value(store):
    calls = []

    @cache_result(
        ttl=None,
        invalidates_on=[InvalidationRule(Article, field_mapping={"article_id": "pk"}, rewarm=True)],
    )
    async def title(article_id):
        calls.append(article_id)
        query = Article.objects.filter(pk=article_id).values_list("title", flat=True)
        return await query.afirst()

    a = Article.objects.create(title="a")
    assert async_to_sync(title)(a.pk) == "a"
    a.title = "a2"
    a.save()
    value, metadata = async_to_sync(title.aget_with_metadata)(a.pk)
    assert (value, metadata["cache_status"]) == ("a2", "HIT")
    assert calls == [a.pk, a.pk]


# -- failures ------------------------------------------------------------------------------


def explode(wrapper, instance):
    raise RuntimeError("invalidator exploded")


def test_failures_are_logged_and_the_save_succeeds(caplog):
    cached_title(field_mapping=None, invalidator=explode)
    with caplog.at_level(logging.ERROR, logger="restflow.caching"):
        a = Article.objects.create(title="a")
        a.save()
        with transaction.atomic():
            a.save()
    assert logged(caplog, "invalidator exploded") == 2


@pytest.mark.parametrize("raise_exception", [False, True])
def test_a_mapped_attribute_that_raises_spares_the_save_and_the_other_rules(
    monkeypatch, caplog, raise_exception
):
    # Read at the signal, inside save(): a failure there is the rule's, not the save's.
    monkeypatch.setattr(Article, "summary", property(lambda self: 1 / 0), raising=False)

    @cache_result(
        ttl=None,
        invalidates_on=[
            InvalidationRule(
                Article, field_mapping={"article_id": "summary"}, raise_exception=raise_exception
            )
        ],
    )
    def summary(article_id):
        return "summary"

    title, _ = cached_title()
    a = Article.objects.create(title="a")
    title(a.pk)
    a.title = "b"
    with caplog.at_level(logging.ERROR, logger="restflow.caching"):
        if raise_exception:
            with pytest.raises(ZeroDivisionError):
                a.save()
        else:
            a.save()
    assert Article.objects.get(pk=a.pk).title == "b"  # post_save comes after the write
    if not raise_exception:
        assert title.get_cache_only(a.pk) is CACHE_MISSING  # the other rule still ran
        assert logged(caplog, "could not read") == 1


def test_raise_exception_surfaces_from_save_and_from_the_atomic_block():
    cached_title(field_mapping=None, invalidator=explode, raise_exception=True)
    a = Article.objects.create(title="a")
    with pytest.raises(RuntimeError, match="exploded"):
        a.save()
    with pytest.raises(RuntimeError, match="exploded"), transaction.atomic():
        a.title = "committed"
        a.save()
    # The error came after the commit: the change stands.
    assert Article.objects.get(pk=a.pk).title == "committed"


@pytest.mark.parametrize(
    ("cache_settings", "rule_option", "raises"),
    [
        ({"DISPATCHER_RAISE_EXCEPTION": True}, None, True),
        ({"DISPATCHER_SETTINGS": {"inline": {"RAISE_EXCEPTION": True}}}, None, True),
        ({"DISPATCHER_RAISE_EXCEPTION": True}, False, False),
        (
            {
                "DISPATCHER_RAISE_EXCEPTION": True,
                "DISPATCHER_SETTINGS": {"inline": {"RAISE_EXCEPTION": False}},
            },
            None,
            False,
        ),
    ],
)
def test_settings_decide_when_the_rule_does_not(cache_settings, rule_option, raises):
    cached_title(field_mapping=None, invalidator=explode, raise_exception=rule_option)
    a = Article.objects.create(title="a")
    with override_settings(RESTFLOW_SETTINGS={"CACHE_SETTINGS": cache_settings}):
        if raises:
            with pytest.raises(RuntimeError):
                a.save()
        else:
            a.save()


class Exploding(Dispatcher):
    name = "test-exploding"

    def dispatch(self, jobs):
        raise ConnectionError("broker down")


class Recording(Dispatcher):
    """Runs the jobs inline, after noting each call."""

    name = "test-recording"
    calls: list = []  # noqa: RUF012

    def dispatch(self, jobs):
        Recording.calls.append([job.rule_id for job in jobs])
        run_cache_rules(jobs, dispatcher_name=self.name)


register_dispatcher(Exploding)
register_dispatcher(Recording)


def test_a_dispatcher_failure_never_fails_the_save_unless_asked(caplog):
    cached_title(dispatcher="test-exploding")
    a = Article.objects.create(title="a")
    with caplog.at_level(logging.ERROR, logger="restflow.caching"):
        a.save()
        with transaction.atomic():
            a.save()
    assert logged(caplog, "broker down") == 2

    cached_title(dispatcher="test-exploding", raise_exception=True)
    with pytest.raises(ConnectionError):
        a.save()


# -- dispatchers of a rule ----------------------------------------------------------------


def test_a_custom_invalidator_runs_on_the_rules_dispatcher():
    threads = []

    def invalidator(wrapper, instance):
        threads.append(threading.current_thread().name)

    cached_title(field_mapping=None, invalidator=invalidator, dispatcher="threadpool")
    Recording.calls = []
    cached_title(field_mapping=None, invalidator=invalidator, dispatcher="test-recording")

    Article.objects.create(title="a").save()
    assert ThreadPoolDispatcher.join(5)
    assert len(Recording.calls) == 1
    assert sorted(threads)[0].startswith("MainThread")
    assert sorted(threads)[1].startswith("restflow-invalidation")


def test_batching_rules_share_one_dispatch():
    Recording.calls = []
    first, _ = cached_title(dispatcher=Recording, batch=True)
    second, _ = cached_title(dispatcher=Recording, batch=True)
    alone, _ = cached_title(dispatcher=Recording)
    a = Article.objects.create(title="a")
    for f in (first, second, alone):
        f(a.pk)

    a.save()

    assert sorted(len(call) for call in Recording.calls) == [1, 2]
    for f in (first, second, alone):
        assert f.get_cache_only(a.pk) is CACHE_MISSING


def test_the_default_dispatcher_setting_is_followed():
    Recording.calls = []
    cached_title()
    a = Article.objects.create(title="a")
    with override_settings(
        RESTFLOW_SETTINGS={"CACHE_SETTINGS": {"DEFAULT_DISPATCHER": "test-recording"}}
    ):
        a.save()
    assert len(Recording.calls) == 1
    a.save()
    assert len(Recording.calls) == 1
