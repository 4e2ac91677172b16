"""Several dependent writes in one statement, one database round trip: PostgreSQL's
data-modifying ``WITH`` (``WITH s0 AS (UPDATE ... RETURNING ...), s1 AS (INSERT ... SELECT
... FROM s0 RETURNING ...) SELECT ...``).

A turn's writes (the conversation's seq bump, the message, its audit record, the run) each
depend on a value the one before returns (the seq, the message id). As separate ORM
statements they are one round trip each, and the ORM compiles each one: under load a
request spends more on those than on the rows. A ``Writes`` runs them as one statement,
atomic on its own: it commits or fails whole (a duplicate key rolls the seq bump back
too), also outside a transaction.

A value a step needs from an earlier one is a ``Ref`` (that step's returned column), set
on the model instance in place of the value (``message.seq = bump.ref("last_seq")``); after
``execute`` a ref's ``value`` is what the database returned. Every insert reads ``FROM`` the
statement's first step (and the steps it refers to), so when the first step touches no row (the
``UPDATE`` of a conversation deleted meanwhile) nothing is inserted and ``execute`` raises
``NothingWritten``.

Only PostgreSQL runs it (``supported()``); callers keep their ORM path for the others (the
embedded SQLite default). The apps build their own steps (``conversations`` the seq bump
and the message, ``audits`` its record, ``chat`` the run): this module knows no model."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import DEFAULT_DB_ALIAS, connection, connections, models


def supported() -> bool:
    return connection.vendor == "postgresql"


# psycopg works out where a statement's placeholders are once per statement text and keeps
# that in a cache (an LRU of 128), but only for statements of at most
# MAX_CACHED_STATEMENT_LENGTH bytes and MAX_CACHED_STATEMENT_PARAMS (50) parameters
# (psycopg/_queries.py, psycopg 3.3). A new conversation's statement here has 71: it was
# parsed again on every chat turn, a regex pass over 3 KB (~5% of the web process's CPU
# under the chat benchmark, py-spy; docs/benchmarks.md, "Seventh round"). Our statements
# come in a handful of shapes, so the cache stays small.
STATEMENT_PARAMS_CACHED = 160


def _psycopg_caches_our_statements() -> None:
    from psycopg import _queries

    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, STATEMENT_PARAMS_CACHED)


_psycopg_caches_our_statements()


_COLUMNS: dict[tuple[str, type], list[tuple]] = {}


def _columns(model: type[models.Model]) -> list[tuple]:
    """``(field, quoted column, cast type, value placeholder)`` of each concrete field of
    ``model``, worked out once per model (a field's ``db_type`` is not cheap, and an insert
    needs it for every column). An untyped literal in a SELECT list is text: every value is
    cast to its column's type, except into a text column (a cast to varchar(n) would
    truncate where the INSERT fails)."""
    key = (connection.vendor, model)
    found = _COLUMNS.get(key)
    if found is None:
        found = []
        for f in model._meta.local_concrete_fields:
            text = (f.db_type(connection) or "").startswith(("varchar", "text"))
            cast = "text" if text else f.cast_db_type(connection)
            found.append((f, connection.ops.quote_name(f.column), cast, "%s" if text else f"CAST(%s AS {cast})"))
        _COLUMNS[key] = found
    return found


def _transaction_not_started(db) -> bool:
    """In an ``atomic`` block whose transaction the server has not seen yet: psycopg sends
    ``BEGIN`` with the first statement, so until then the session is idle."""
    from psycopg.pq import TransactionStatus

    return (
        db.in_atomic_block
        and db.connection is not None
        and not db.connection.autocommit
        and db.connection.info.transaction_status == TransactionStatus.IDLE
    )


class NothingWritten(Exception):
    """The first step of a ``Writes`` touched no row, so nothing was written."""


@dataclass(eq=False)
class Step:
    """One data-modifying part of a ``Writes``; ``row`` holds what it returned (its
    ``RETURNING`` columns, in order) once it ran."""

    name: str
    sql: str
    params: list
    returning: tuple[str, ...]
    row: tuple | None = None

    def ref(self, column: str) -> "Ref":
        if column not in self.returning:
            raise ValueError(f"step {self.name} does not return {column!r}")
        return Ref(self, column)


@dataclass(frozen=True, eq=False)
class Ref:
    """``column`` of ``step``'s row: an SQL expression for the later steps of its chain, and
    the returned value once it ran."""

    step: Step
    column: str

    @property
    def sql(self) -> str:
        return f"{self.step.name}.{connection.ops.quote_name(self.column)}"

    @property
    def value(self):
        if self.step.row is None:
            raise RuntimeError(f"step {self.step.name} has not run")
        return self.step.row[self.step.returning.index(self.column)]


@dataclass(frozen=True, eq=False)
class Expr:
    """A column's value as SQL over earlier steps (``refs``, read ``FROM`` by the insert)
    with its own ``params``; e.g. a jsonb built from a constant and a returned id."""

    sql: str
    params: tuple = ()
    refs: tuple[Ref, ...] = ()


@dataclass
class Writes:
    steps: list[Step] = field(default_factory=list)
    done: list[Callable[[], None]] = field(default_factory=list)

    def add(self, sql: str, params: Iterable, returning: Iterable[str]) -> Step:
        step = Step(name=f"s{len(self.steps)}", sql=sql, params=list(params), returning=tuple(returning))
        self.steps.append(step)
        return step

    def insert(self, instance: models.Model, *, returning: Iterable[str] = ("id",)) -> Step:
        """``INSERT`` of ``instance`` (unsaved): each field's value as the ORM's insert
        computes it (defaults, ``pre_save``, ``get_db_prep_save``), except a ``Ref`` or
        ``Expr`` set on a field, which is that SQL. Once per row of the first step
        (one), and of every step referred to; as the first step, once."""
        meta = instance._meta
        db = connections[DEFAULT_DB_ALIAS]  # not the proxy: looked up once, not per value
        qn = db.ops.quote_name
        sources = {self.steps[0].name: None} if self.steps else {}
        columns, values, params = [], [], []
        for f, column, cast, placeholder in _columns(type(instance)):
            raw = getattr(instance, f.attname)
            if f.primary_key and raw is None:
                continue  # the database's sequence
            columns.append(column)
            if isinstance(raw, Ref):
                sources[raw.step.name] = None
                values.append(f"CAST({raw.sql} AS {cast})")
            elif isinstance(raw, Expr):
                sources.update((ref.step.name, None) for ref in raw.refs)
                values.append(f"CAST(({raw.sql}) AS {cast})")
                params.extend(raw.params)
            else:
                values.append(placeholder)
                params.append(f.get_db_prep_save(f.pre_save(instance, True), connection=db))
        returned = tuple(returning)
        sql = f"INSERT INTO {qn(meta.db_table)} ({', '.join(columns)}) SELECT {', '.join(values)}"
        if sources:
            sql += f" FROM {', '.join(sources)}"
        return self.add(sql + f" RETURNING {', '.join(qn(c) for c in returned)}", params, returned)

    def update(self, model: type[models.Model], *, pk, values: dict, match: dict | None = None) -> Step:
        """``UPDATE`` of ``model``'s row ``pk`` where every field in ``match`` equals its
        value (a conditional move: no row when it does not), setting ``values`` (field
        name to value, or to a ``Ref``); returns the id. Reads ``FROM`` the steps referred
        to."""
        meta = model._meta
        qn = connection.ops.quote_name
        sources: dict[str, None] = {}
        sets, params = [], []
        for name, value in values.items():
            f = meta.get_field(name)
            # As for inserts (``_columns``): into a text column no cast, since an explicit
            # cast to varchar(n) truncates where the assignment fails ("value too long"),
            # as the ORM's UPDATE does.
            text = (f.db_type(connection) or "").startswith(("varchar", "text"))
            cast = "text" if text else f.cast_db_type(connection)
            if isinstance(value, Ref):
                sources[value.step.name] = None
                sets.append(f"{qn(f.column)} = CAST({value.sql} AS {cast})")
            else:
                sets.append(f"{qn(f.column)} = %s" if text else f"{qn(f.column)} = CAST(%s AS {cast})")
                params.append(f.get_db_prep_save(value, connection=connection))
        where = [f"{qn(meta.db_table)}.{qn(meta.pk.column)} = %s"]
        params.append(pk)
        for name, value in (match or {}).items():
            f = meta.get_field(name)
            where.append(f"{qn(meta.db_table)}.{qn(f.column)} = %s")
            params.append(f.get_db_prep_value(value, connection=connection, prepared=False))
        sql = f"UPDATE {qn(meta.db_table)} SET {', '.join(sets)}"
        if sources:
            sql += f" FROM {', '.join(sources)}"
        sql += f" WHERE {' AND '.join(where)} RETURNING {qn(meta.db_table)}.{qn(meta.pk.column)}"
        return self.add(sql, params, (meta.pk.column,))

    def on_done(self, func: Callable[[], None]) -> None:
        """``func()`` once the statement succeeded, in the order registered (fill in
        the instances' ids, register after-commit work: a hook registered before the row
        exists would run at once outside a transaction)."""
        self.done.append(func)

    def execute(self, *, own_transaction: bool = False) -> None:
        """Runs every step in one statement, fills each step's ``row`` (None for a step
        that touched no row), then runs the ``on_done`` callbacks. Raises ``NothingWritten``
        when the first step touched no row (every insert reads from it: nothing was
        written); the database's errors (``IntegrityError``...) as they come, with nothing
        written. A later step that touched no row (a conditional ``UPDATE`` that found its
        row moved on) is the caller's to check (``row is None``), and to roll back.

        ``own_transaction``: the caller promises that this statement is the only write of
        its transaction (the outermost ``atomic`` block, which writes nothing after it).
        When that transaction has not started on the server yet (nothing was sent since
        the block opened), the statement runs as a transaction of its own: no ``BEGIN``
        and no ``COMMIT`` round trip, the same one commit. The block's on-commit hooks
        still run when it exits, in the order registered (its ``COMMIT`` has nothing left
        to do). Otherwise (a statement was sent already) it runs in the transaction."""
        db = connections[DEFAULT_DB_ALIAS]
        alone = own_transaction and _transaction_not_started(db)
        if alone:
            db.connection.autocommit = True
        try:
            row = self._run(db)
        finally:
            if alone:
                db.connection.autocommit = False
        at = 0
        for step in self.steps:
            if not step.returning:
                continue
            values = tuple(row[at : at + len(step.returning)])
            step.row = None if all(value is None for value in values) else values
            at += len(step.returning)
        if self.steps[0].returning and self.steps[0].row is None:
            raise NothingWritten(f"step {self.steps[0].name} touched no row")
        for func in self.done:
            func()

    def _run(self, db) -> tuple:
        qn = db.ops.quote_name
        ctes = ", ".join(f"{step.name} AS ({step.sql})" for step in self.steps)
        # Always one row: each step's columns, NULL for a step with no row (every step
        # writes at most one row: each reads FROM the first). A step that returns nothing
        # (it may write several rows) is not read.
        read = [step for step in self.steps if step.returning]
        columns = ", ".join(f"{step.name}.{qn(c)}" for step in read for c in step.returning)
        joins = " ".join(f"LEFT JOIN {step.name} ON true" for step in read)
        params = [p for step in self.steps for p in step.params]
        with db.cursor() as cursor:
            cursor.execute(f"WITH {ctes} SELECT {columns} FROM (VALUES (1)) AS one (x) {joins}", params)
            rows = cursor.fetchall()
        if len(rows) != 1:
            raise ValueError(f"single-row steps returned {len(rows)} rows")
        return rows[0]
