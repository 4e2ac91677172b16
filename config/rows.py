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
aliases ``m`` (the model) and ``r`` (the related model; with several keys ``r``, ``r2``,
``r3``... in their order). Only non-null foreign keys (inner joins): every read that uses
it has them."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connection, models


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: list[str]
    related_names: list[list[str]]
    converters: list[tuple[int, list, object]]


def _alias(position: int) -> str:
    return "r" if position == 0 else f"r{position + 1}"


class JoinedRead:
    def __init__(
        self,
        model: type[models.Model],
        related: str | Sequence[str],
        where: Callable[[Callable[[str], str]], str],
    ):
        """``related``: the foreign key joined, or several (``select_related(*related)``).
        ``where(quote_name)``: the WHERE clause (without the keyword) on ``m`` and the
        related aliases, with ``%s`` placeholders, called once per vendor."""
        self.related = (related,) if isinstance(related, str) else tuple(related)
        for name in self.related:
            if model._meta.get_field(name).null:
                raise ValueError(f"{model.__name__}.{name} may be null: JoinedRead joins a non-null key only")
        self.model = model
        self.where = where
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self) -> _Compiled:
        found = self._compiled.get(connection.vendor)
        if found is not None:
            return found
        qn = connection.ops.quote_name
        fields = self.model._meta.concrete_fields
        columns = [f"m.{qn(f.column)}" for f in fields]
        expressions = [f.get_col("m") for f in fields]
        joins, related_names = [], []
        for position, name in enumerate(self.related):
            alias = _alias(position)
            field = self.model._meta.get_field(name)
            related_model = field.related_model
            related_fields = related_model._meta.concrete_fields
            columns += [f"{alias}.{qn(f.column)}" for f in related_fields]
            expressions += [f.get_col(alias) for f in related_fields]
            related_names.append([f.attname for f in related_fields])
            joins.append(
                f" INNER JOIN {qn(related_model._meta.db_table)} {alias}"
                f" ON {alias}.{qn(field.target_field.column)} = m.{qn(field.column)}"
            )
        sql = (
            f"SELECT {', '.join(columns)} FROM {qn(self.model._meta.db_table)} m{''.join(joins)} WHERE {self.where(qn)}"
        )
        converters = []
        for position, expression in enumerate(expressions):
            found_converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if found_converters:
                converters.append((position, found_converters, expression))
        found = self._compiled[connection.vendor] = _Compiled(
            sql=sql,
            names=[f.attname for f in fields],
            related_names=related_names,
            converters=converters,
        )
        return found

    def one(self, params: Sequence):
        """The first row's instance with the related ones cached on it, or None when no row
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
        start = len(compiled.names)
        instance = self.model.from_db(connection.alias, compiled.names, row[:start])
        for name, names in zip(self.related, compiled.related_names, strict=True):
            field = self.model._meta.get_field(name)
            end = start + len(names)
            field.set_cached_value(instance, field.related_model.from_db(connection.alias, names, row[start:end]))
            start = end
        return instance
