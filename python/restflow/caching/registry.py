"""``CacheRegister``: the rules of this process, wired to Django's model signals.

A change goes through three steps:

1. **At the signal** (inside ``save()`` / ``delete()``): each rule of the
   instance's model (or of a parent or concrete model of a proxy) decides
   whether the change concerns it and reads the values it maps, now, while
   a deleted instance still has its primary key.
2. **At the commit** (``transaction.on_commit``; at once outside
   ``atomic``): the jobs go to their rules' dispatchers, grouped when rules
   ask to ``batch``. Nothing is invalidated for a transaction that rolls
   back, and no reader can cache the old row again after the invalidation,
   as could happen if it ran before the commit.
3. **Where the dispatcher runs it**: :func:`restflow.caching.tasks.run_cache_rules`.

A failure anywhere is logged on the ``restflow.caching`` logger and never
makes ``save()`` raise, unless the rule's ``raise_exception`` (or the
settings) ask for it.

Many-to-many ``add()``, ``remove()`` and ``clear()`` send only
``m2m_changed``: they run the rules of the link table and of both sides'
models (see :meth:`CacheRegistry._on_m2m`).

``QuerySet.update()``, ``bulk_update()`` and ``bulk_create()`` send no
signals. Run the rules for such changes yourself::

    comments = Comment.objects.filter(article=article)
    with transaction.atomic():
        CacheRegister.invalidate_instances(comments)   # values as they are before
        comments.update(article=other)
        CacheRegister.invalidate_instances(Comment.objects.filter(article=other))

Values are read when it is called and the work is dispatched at the commit,
as for a save: call it before an update that changes mapped fields (and
again after, for the new values), after one that does not.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Model, QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save

from restflow.caching.dispatchers.base import Dispatcher
from restflow.caching.dispatchers.jobs import Change, Job, SignalTypes
from restflow.caching.process_locks import ProcessLock
from restflow.caching.rules import (
    BoundRule,
    InvalidationRule,
    check_function,
    check_model,
    function_path,
)

__all__ = ["CacheRegister", "CacheRegistry", "ModelStatus"]

logger = logging.getLogger("restflow.caching")

#: Submodules auto_discover() never imports: generated, test-only, or
#: modules that set Django up themselves.
SKIPPED_MODULES = frozenset({"migrations", "tests", "conftest", "management", "wsgi", "asgi"})


class CacheRegistry:
    """The invalidation rules of this process, by model and by identifier."""

    SignalTypes = SignalTypes

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self._lock = ProcessLock(reentrant=True)
        self._pending: list[tuple[str, Any, InvalidationRule, int]] = []
        self._by_model: dict[type, list[BoundRule]] = {}
        self._by_id: dict[str, BoundRule] = {}
        self._positions: dict[str, int] = {}
        self._for_class: dict[type, tuple[BoundRule, ...]] = {}
        self._connected = False
        self._discovered = False

    # -- registering ------------------------------------------------------------

    def add(
        self,
        model: type[Model] | str,
        func: Any,
        invalidation_rule: InvalidationRule,
        *,
        position: int | None = None,
    ) -> None:
        """Makes changes of ``model`` run ``invalidation_rule`` on the cached
        function ``func``. ``cache_result(invalidates_on=[...])`` calls this
        with each rule's position; a direct call takes the next free one."""
        if not isinstance(invalidation_rule, InvalidationRule):
            raise TypeError(f"add() takes an InvalidationRule; got {invalidation_rule!r}.")
        check_function(invalidation_rule, func)
        check_model(model)
        with self._lock:
            path = function_path(func)
            if position is None:
                position = self._positions.get(path, 0)
            self._positions[path] = max(self._positions.get(path, 0), position + 1)
            resolved = _resolve_model(model)
            if resolved is None:
                self._pending.append((model, func, invalidation_rule, position))
            else:
                self._bind(BoundRule(invalidation_rule, func, resolved, position))

    register = add

    def _bind(self, bound: BoundRule) -> None:
        previous = self._by_id.get(bound.rule_id)
        if previous is not None and previous.wrapper is bound.wrapper:
            self._by_model[previous.model].remove(previous)
        elif previous is not None:
            # Another function of the same dotted path (a factory's local
            # function, a module imported again): both keep their rules in
            # this process, but a broker job can name only the latest.
            logger.warning(
                "restflow: two cached functions are named %s; broker jobs of rule %s "
                "run the latest one's",
                bound.function,
                bound.rule_id,
            )
        self._by_id[bound.rule_id] = bound
        self._by_model.setdefault(bound.model, []).append(bound)
        self._for_class.clear()
        self._connect()

    def _connect(self) -> None:
        # One receiver for every model: a save of a model without rules
        # costs one dictionary lookup, and subclasses and proxies are found
        # through the class's MRO.
        if not self._connected:
            uid = f"restflow.caching.registry.{self.name}.{id(self)}"
            post_save.connect(self._on_save, weak=False, dispatch_uid=f"{uid}.save")
            post_delete.connect(self._on_delete, weak=False, dispatch_uid=f"{uid}.delete")
            m2m_changed.connect(self._on_m2m, weak=False, dispatch_uid=f"{uid}.m2m")
            self._connected = True

    def rules_for(self, model: type) -> tuple[BoundRule, ...]:
        """The rules that a change of ``model`` runs: its own, its parents',
        those of every proxy of a table the change writes, and those of the
        models that inherit one of those tables (multi-table inheritance).

        Django names only the class a row was saved through as the signal's
        sender. A proxy shares its concrete model's table: a row saved
        through ``Article`` (or another proxy of it) is a row of
        ``FeaturedArticle`` too. A child model reads its parent's columns: a
        save through ``Article`` changes the ``ReviewedArticle`` of that row,
        if there is one (:meth:`BoundRule.capture` looks it up). A rule that
        did not run then would leave what it caches stale."""
        found = self._for_class.get(model)
        if found is None:
            with self._lock:
                mro = model.__mro__
                own = [bound for klass in mro for bound in self._by_model.get(klass, ())]
                tables = {
                    klass._meta.concrete_model
                    for klass in mro
                    if isinstance(klass, type)
                    and issubclass(klass, Model)
                    and klass is not Model
                    and not klass._meta.abstract
                }
                others = [
                    bound
                    for klass, rules in self._by_model.items()
                    if klass not in mro
                    and (
                        (klass._meta.proxy and klass._meta.concrete_model in tables)
                        or any(issubclass(klass._meta.concrete_model, table) for table in tables)
                    )
                    for bound in rules
                ]
                found = (*own, *others)
                self._for_class[model] = found
        return found

    def rules(self) -> list[BoundRule]:
        """Every bound rule, in registration order."""
        with self._lock:
            return list(self._by_id.values())

    def get_rule(self, rule_id: str) -> BoundRule | None:
        """The rule known by ``rule_id`` (``"<function path>#<position>"``)."""
        return self._by_id.get(rule_id)

    def find(self, job: Job) -> BoundRule:
        """The rule a job names, importing the function's module when this
        process has not (a worker imports only what it needs)."""
        bound = self._by_id.get(job.rule_id)
        if bound is None:
            importlib.import_module(job.module)
            self._resolve_pending()
            bound = self._by_id.get(job.rule_id)
        if bound is None:
            raise LookupError(
                f"No invalidation rule {job.rule_id!r} in this process: is {job.module!r} "
                "the module that defines it, and does this process run the same code?"
            )
        if bound.model_label != job.model:
            raise LookupError(
                f"Invalidation rule {job.rule_id!r} is on {bound.model_label} here but the job "
                f"came for {job.model}: the sending process runs different code."
            )
        return bound

    # -- discovery --------------------------------------------------------------

    def auto_discover(self) -> CacheRegistry:
        """Imports the modules of the project's apps so that every cached
        function's rules are registered, in every process (a worker too),
        before the first change; then binds rules given a model by name and
        builds every rule's dispatcher, so a misconfiguration fails at start.
        Called by the ``restflow.caching`` app's ``ready()``; runs once.

        Apps installed in ``site-packages`` and the modules named in
        ``SKIPPED_MODULES`` (migrations, tests, management commands,
        wsgi/asgi) are not imported; an import that fails is logged."""
        with self._lock:
            if self._discovered:
                return self
            self._discovered = True
        import_app_modules()
        self._resolve_pending()
        for bound in list(self._by_id.values()):
            bound.rule.get_dispatcher()
        logger.info(
            "restflow: %d invalidation rules on %d models", len(self._by_id), self.model_count
        )
        return self

    def _resolve_pending(self) -> None:
        with self._lock:
            waiting, self._pending = self._pending, []
            for model, func, rule, position in waiting:
                resolved = _resolve_model(model, strict=True)
                self._bind(BoundRule(rule, func, resolved, position))

    @property
    def is_discovered(self) -> bool:
        """Whether :meth:`auto_discover` has run."""
        return self._discovered

    @property
    def pending_count(self) -> int:
        """Rules whose model, given by name, waits for the apps to load."""
        return len(self._pending)

    @property
    def model_count(self) -> int:
        """How many models have rules."""
        return sum(1 for rules in self._by_model.values() if rules)

    def get_status(self) -> dict[str, Any]:
        """A snapshot for debugging and health checks. ``"models"`` is keyed by
        ``"app_label.ModelName"`` and also answers a bare model name
        (drf-restflow's key) when one app alone has a model of that name."""
        models: ModelStatus = ModelStatus()
        with self._lock:
            for model, rules in self._by_model.items():
                for bound in rules:
                    models.setdefault(model._meta.label, []).append(
                        {
                            "id": bound.rule_id,
                            "function": bound.function,
                            "target": bound.target,
                            "dispatcher": bound.rule.dispatcher_name,
                        }
                    )
            return {
                "name": self.name,
                "discovered": self._discovered,
                "pending": len(self._pending),
                "models": models,
            }

    def clear(self) -> None:
        """Forgets every rule and disconnects the signals (for tests)."""
        with self._lock:
            if self._connected:
                uid = f"restflow.caching.registry.{self.name}.{id(self)}"
                post_save.disconnect(dispatch_uid=f"{uid}.save")
                post_delete.disconnect(dispatch_uid=f"{uid}.delete")
                m2m_changed.disconnect(dispatch_uid=f"{uid}.m2m")
                self._connected = False
            self._pending.clear()
            self._by_model.clear()
            self._by_id.clear()
            self._positions.clear()
            self._for_class.clear()
            self._discovered = False

    # -- changes ------------------------------------------------------------------

    def _on_save(self, sender: type, instance: Any, created: bool = False, **kwargs: Any) -> None:
        rules = self.rules_for(sender)
        if rules:
            update_fields = kwargs.get("update_fields")
            change = Change(
                SignalTypes.POST_SAVE,
                bool(created),
                None if update_fields is None else frozenset(update_fields),
            )
            self._schedule(self._collect([instance], change), kwargs.get("using"))

    def _on_delete(self, sender: type, instance: Any, **kwargs: Any) -> None:
        if self.rules_for(sender):
            change = Change(SignalTypes.POST_DELETE)
            self._schedule(self._collect([instance], change), kwargs.get("using"))

    def _on_m2m(
        self,
        sender: type,
        instance: Any,
        action: str,
        reverse: bool,
        model: type,
        pk_set: set[Any] | None,
        using: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``add()``, ``remove()`` and ``clear()`` of a many-to-many relation
        save neither row; Django sends only ``m2m_changed``. They run the rules
        of the link table (``Tag.articles.through``: each link added is a save
        that creates it, each removed one a delete) and of both sides' models
        (a save of each row whose relation changed, with ``update_fields``
        naming the relation as that model's ``get_field`` does: ``"articles"``
        on Tag, ``"tags"`` on Article, so ``watch_fields`` can name it).

        Handled after an add or a remove, and before a clear, which sends no
        primary keys: the links it will delete are read then."""
        if action not in ("post_add", "post_remove", "pre_clear"):
            return
        links, here, there = self.rules_for(sender), self.rules_for(type(instance)), ()
        if model is not None:
            there = self.rules_for(model)
        if not (links or here or there):
            return
        field = _m2m_field(sender, instance, model, reverse)
        if field is None:
            return
        # The link table's columns: this side's (``instance``'s) and the other's;
        # the relation's name on each side.
        mine = sender._meta.get_field(field.m2m_field_name()).attname
        theirs = sender._meta.get_field(field.m2m_reverse_field_name()).attname
        name_here, name_there = field.name, field.related_query_name()
        if reverse:
            mine, theirs = theirs, mine
            name_here, name_there = name_there, name_here
        if pk_set is None:
            links_here = sender._base_manager.using(using).filter(**{mine: instance.pk})
            pk_set = set(links_here.values_list(theirs, flat=True))
        if not pk_set:
            return
        pairs = []
        if links:
            added = action == "post_add"
            change = (
                Change(SignalTypes.POST_SAVE, True) if added else Change(SignalTypes.POST_DELETE)
            )
            rows = [sender(**{mine: instance.pk, theirs: pk}) for pk in pk_set]
            pairs += self._collect(rows, change)
        if here:
            change = Change(SignalTypes.POST_SAVE, False, frozenset({name_here}))
            pairs += self._collect([instance], change)
        if there:
            change = Change(SignalTypes.POST_SAVE, False, frozenset({name_there}))
            pairs += self._collect(model._base_manager.using(using).filter(pk__in=pk_set), change)
        self._schedule(pairs, using)

    def invalidate_instances(
        self,
        instances: QuerySet | Iterable[Model] | Model,
        *,
        signal_type: SignalTypes | str = SignalTypes.POST_SAVE,
        created: bool = False,
        update_fields: Iterable[str] | None = None,
        using: str | None = None,
    ) -> int:
        """Runs the rules for changes Django sends no signal for
        (``QuerySet.update``, ``bulk_update``, ``bulk_create``, raw SQL).

        Each instance counts as a save (or, with
        ``signal_type=SignalTypes.POST_DELETE``, a delete) with ``created``
        and ``update_fields`` as given, so ``trigger_on_create``,
        ``watch_fields`` and ``invalidate_when`` apply as they do to a save.
        The values are read now; the work is dispatched when the
        transaction commits (now, outside one). Jobs that would do the same
        work (many rows of one article) run once, and rules with
        ``batch=True`` share one dispatch per dispatcher. Returns how many
        jobs were scheduled.
        """
        change = Change(
            SignalTypes(signal_type),
            bool(created),
            None if update_fields is None else frozenset(update_fields),
        )
        if isinstance(instances, Model):
            instances = [instances]
        if isinstance(instances, QuerySet):
            if not self.rules_for(instances.model):
                return 0
            using = using or instances.db
            instances = instances.iterator()
        else:
            instances = list(instances)
            if using is None and instances:
                using = instances[0]._state.db
        pairs = self._collect(instances, change)
        self._schedule(pairs, using)
        return len(pairs)

    def invalidate_for_instance(
        self,
        instance: Model,
        instance_created: bool,
        signal_type: SignalTypes | str,
        update_fields: Iterable[str] | None = None,
    ) -> int:
        """drf-restflow's name: the rules for one change of ``instance``
        (see :meth:`invalidate_instances`)."""
        return self.invalidate_instances(
            [instance],
            signal_type=signal_type,
            created=instance_created,
            update_fields=update_fields,
        )

    def run_cache_rules(
        self, *, rule_ids: Iterable[Any], rule_kwargs: dict[str, Any] | None = None
    ) -> None:
        """drf-restflow's entry point: runs rules by id with their arguments
        (``{rule_id: {parameter: value}}``); see
        :func:`restflow.caching.tasks.run_cache_rules`."""
        from restflow.caching.tasks import run_cache_rules

        run_cache_rules(rule_ids=rule_ids, rule_kwargs=rule_kwargs or {})

    def _collect(self, instances: Iterable[Any], change: Change) -> list[tuple[BoundRule, Job]]:
        """The jobs of a change, read now; identical jobs once."""
        pairs: list[tuple[BoundRule, Job]] = []
        seen: set[Any] = set()
        for instance in instances:
            for bound in self.rules_for(type(instance)):
                try:
                    job = bound.capture(instance, change)
                except Exception:
                    if bound.rule.raises():
                        raise
                    logger.exception("restflow: rule %s could not read %r", bound.rule_id, instance)
                    continue
                if job is None:
                    continue
                identity = job.identity()
                if identity is not None:
                    if identity in seen:
                        continue
                    seen.add(identity)
                pairs.append((bound, job))
        return pairs

    def _schedule(self, pairs: list[tuple[BoundRule, Job]], using: str | None) -> None:
        if pairs:
            transaction.on_commit(lambda: self._dispatch(pairs), using=using or DEFAULT_DB_ALIAS)

    def _dispatch(self, pairs: list[tuple[BoundRule, Job]]) -> None:
        """Hands the jobs to their dispatchers; a failing dispatcher does not
        stop the others, and raises only for a rule that asks to."""
        groups: dict[Any, tuple[Dispatcher, list[tuple[BoundRule, Job]]]] = {}
        errors: list[BaseException] = []
        for bound, job in pairs:
            try:
                dispatcher = bound.rule.get_dispatcher()
            except Exception as error:
                self._failed(error, [bound], bound.rule.dispatcher_name, errors)
                continue
            if bound.rule.batch and dispatcher.supports_batching:
                key: Any = ("batch", dispatcher.batch_key())
            else:
                key = ("alone", id(job))
            groups.setdefault(key, (dispatcher, []))[1].append((bound, job))
        for dispatcher, members in groups.values():
            try:
                dispatcher.dispatch([job for _bound, job in members])
            except Exception as error:
                self._failed(error, [bound for bound, _job in members], dispatcher.name, errors)
        if errors:
            raise errors[0]

    @staticmethod
    def _failed(
        error: Exception, rules: list[BoundRule], dispatcher: str, errors: list[BaseException]
    ) -> None:
        if any(bound.rule.raises(dispatcher) for bound in rules):
            errors.append(error)
            return
        logger.error(
            "restflow: dispatcher %r failed for %s",
            dispatcher,
            ", ".join(bound.rule_id for bound in rules),
            exc_info=error,
        )


class ModelStatus(dict):
    """``get_status()["models"]``: by model label, and by bare model name.

    drf-restflow keyed the status by ``Model.__name__``, which two apps can
    share; restflow keys it by label, and looks a bare name up among the
    labels only when exactly one matches. A plain ``dict`` otherwise (equal
    to one, iterated and serialized by label)."""

    def _label(self, key: object) -> object:
        if not isinstance(key, str) or "." in key or dict.__contains__(self, key):
            return key
        labels = [label for label in self if label.rpartition(".")[2] == key]
        if len(labels) > 1:
            raise KeyError(
                f"{key!r} is ambiguous: {', '.join(sorted(labels))}; ask by 'app_label.Model'."
            )
        return labels[0] if labels else key

    def __missing__(self, key: object) -> Any:
        label = self._label(key)
        if label == key:
            raise KeyError(key)
        return self[label]

    def __contains__(self, key: object) -> bool:
        try:
            return dict.__contains__(self, self._label(key))
        except KeyError:
            return False

    def get(self, key: object, default: Any = None) -> Any:
        return self[key] if key in self else default


def _m2m_field(through: type, instance: Any, model: type, reverse: bool) -> Any:
    """The ``ManyToManyField`` whose link table is ``through``: declared by
    ``instance``'s model (a forward change) or by ``model`` (a reverse one)."""
    declaring = model if reverse else type(instance)
    for field in declaring._meta.many_to_many:
        if field.remote_field.through is through:
            return field
    return None


def _resolve_model(model: type | str, strict: bool = False) -> type | None:
    """The model class; ``None`` for a name while the apps are not loaded."""
    if not isinstance(model, str):
        return model
    from django.apps import apps

    if not strict and not apps.models_ready:
        return None
    return apps.get_model(model)


def import_app_modules() -> None:
    from django.apps import apps

    for app_config in apps.get_app_configs():
        package = app_config.module
        if app_config.name == "restflow.caching" or "site-packages" in (
            getattr(package, "__file__", "") or ""
        ):
            continue
        _import_tree(app_config.name, getattr(package, "__path__", None))


def _import_tree(prefix: str, path: Iterable[str] | None) -> None:
    """Imports the submodules under ``path``, never entering a skipped one
    (``pkgutil.walk_packages`` would import a package to look inside it)."""
    if path is None:
        return
    for info in pkgutil.iter_modules(path, prefix=f"{prefix}."):
        last = info.name.rpartition(".")[2]
        if last in SKIPPED_MODULES or last.startswith("test_"):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:
            logger.warning("restflow: auto_discover could not import %s", info.name, exc_info=True)
            continue
        if info.ispkg:
            _import_tree(info.name, getattr(module, "__path__", None))


#: The registry of this process.
CacheRegister = CacheRegistry()
