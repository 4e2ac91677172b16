"""One model's row with one foreign key's row joined, read by a statement written once per
database vendor instead of a queryset compiled on every call.

The hot reads that start most requests (the caller with their tenant, the conversation a
message is posted to with its owner) were each an ORM queryset compiled per call:
``filter``, ``select_related``, lookups resolved, SQL written. Under load that compiling
cost more than the query (py-spy on the served 202 path: a quarter of its Python time was
``conversation_get``'s, a sixth ``load_user``'s; docs/benchmarks.md, "Fifth round"). A
``JoinedRead`` writes its SELECT the first time it runs on a database vendor, then only
sends it: the columns are the model's concrete fields and the related model's, each value
goes through the converters the ORM applies to that column (a JSON field, SQLite's dates),
and the instances are built with ``Model.from_db`` with the related one cached on the
first, as ``select_related`` leaves them. The WHERE clause is the caller's, written on the
aliases ``m`` (the model) and ``r`` (the related model). Only a non-null foreign key (an
inner join): both reads that use it have one."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connection, models


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: list[str]
    related_names: list[str]
    converters: list[tuple[int, list, object]]


class JoinedRead:
    def __init__(self, model: type[models.Model], related: str, where: Callable[[Callable[[str], str]], str]):
        """``where(quote_name)``: the WHERE clause (without the keyword) on ``m`` and ``r``
        with ``%s`` placeholders, called once per vendor."""
        if model._meta.get_field(related).null:
            raise ValueError(f"{model.__name__}.{related} may be null: JoinedRead joins a non-null key only")
        self.model = model
        self.related = related
        self.where = where
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self) -> _Compiled:
        found = self._compiled.get(connection.vendor)
        if found is not None:
            return found
        qn = connection.ops.quote_name
        field = self.model._meta.get_field(self.related)
        related_model = field.related_model
        fields, related_fields = self.model._meta.concrete_fields, related_model._meta.concrete_fields
        columns = [f"m.{qn(f.column)}" for f in fields] + [f"r.{qn(f.column)}" for f in related_fields]
        target = field.target_field.column
        sql = (
            f"SELECT {', '.join(columns)} FROM {qn(self.model._meta.db_table)} m"
            f" INNER JOIN {qn(related_model._meta.db_table)} r ON r.{qn(target)} = m.{qn(field.column)}"
            f" WHERE {self.where(qn)}"
        )
        expressions = [f.get_col("m") for f in fields] + [f.get_col("r") for f in related_fields]
        converters = []
        for position, expression in enumerate(expressions):
            found_converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if found_converters:
                converters.append((position, found_converters, expression))
        found = self._compiled[connection.vendor] = _Compiled(
            sql=sql,
            names=[f.attname for f in fields],
            related_names=[f.attname for f in related_fields],
            converters=converters,
        )
        return found

    def one(self, params: Sequence):
        """The first row's instance with the related one cached on it, or None when no row
        matches."""
        compiled = self._compile()
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = list(row)
        for position, converters, expression in compiled.converters:
            value = row[position]
            for converter in converters:
                value = converter(value, expression, connection)
            row[position] = value
        split = len(compiled.names)
        instance = self.model.from_db(connection.alias, compiled.names, row[:split])
        field = self.model._meta.get_field(self.related)
        field.set_cached_value(
            instance, field.related_model.from_db(connection.alias, compiled.related_names, row[split:])
        )
        return instance
