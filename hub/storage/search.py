"""FHIR search: parses the query string into criteria and runs them against the index.

Supported: every parameter of search_parameters.yaml plus _id and _lastUpdated; token
(system|code), string (starts-with, :contains), reference (Type/id, id, :Type), date with
the prefixes eq ne lt gt le ge sa eb; :missing on any parameter; comma = OR, repetition =
AND; _count, _offset, _sort=[-]_lastUpdated|[-]_id, _include=Type:param[:Target].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select, true
from sqlalchemy.orm import Session

from hub.errors import InvalidRequest, UnknownSearchParameter
from hub.fhir.dates import date_range
from hub.fhir.search_parameters import SearchParameter, search_parameters
from hub.storage.indexer import normalise_text, split_reference
from hub.storage.repository import StoredResource, stored_from_row
from hub.storage.tables import ResourceRow, SearchIndexRow

# Parameters that shape the result rather than select resources; _format and _pretty are
# accepted and ignored (the API speaks JSON only).
RESULT_PARAMETERS = {"_count", "_offset", "_sort", "_include", "_total", "_format", "_pretty"}
DATE_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb")
# resource type → a condition on ResourceRow: the rows the caller may see.
VisibleRows = Callable[[str], ColumnElement[bool]]
SORTS = {"_lastUpdated", "-_lastUpdated", "_id", "-_id"}


@dataclass(frozen=True)
class Criterion:
    """One `name[:modifier]=v1,v2` of the query: any of the values matches."""

    name: str
    modifier: str | None
    values: tuple[str, ...]


@dataclass(frozen=True)
class Include:
    source_type: str
    param: str
    target_type: str | None


@dataclass
class SearchQuery:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    sort: str = "_lastUpdated"
    includes: list[Include] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    """The query string it was parsed from (for the audit trail and paging links)."""


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int


def parse_search(
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
) -> SearchQuery:
    """Turn query-string pairs into a SearchQuery, or raise InvalidRequest naming the problem."""
    known = search_parameters()[resource_type]
    query = SearchQuery(resource_type, count=default_count, params=list(params))
    for raw_name, raw_value in params:
        name, _, modifier = raw_name.partition(":")
        where = f"{resource_type}?{raw_name}"
        if name == "_count":
            query.count = min(whole_number(raw_value, where), max_count)
        elif name == "_offset":
            query.offset = whole_number(raw_value, where)
        elif name == "_sort":
            if raw_value not in SORTS:
                raise InvalidRequest(
                    f"_sort={raw_value} is not supported; use one of {', '.join(sorted(SORTS))}.",
                    expression=where,
                )
            query.sort = raw_value
        elif name == "_include":
            query.includes.append(_parse_include(raw_value, where))
        elif name in RESULT_PARAMETERS:
            continue
        elif name in ("_id", "_lastUpdated") or name in known:
            query.criteria.append(_criterion(resource_type, name, modifier or None, raw_value))
        else:
            raise UnknownSearchParameter(
                f"Unknown search parameter '{name}' for {resource_type}. Supported: "
                f"{', '.join(['_id', '_lastUpdated', *sorted(known)])}.",
                expression=where,
            )
    return query


# Offsets beyond this overflow the database's LIMIT/OFFSET integers.
MAX_OFFSET = 2**31 - 1


def whole_number(raw: str, where: str) -> int:
    """A paging number (_count, _offset) from 0 to MAX_OFFSET, or InvalidRequest."""
    if not raw.isdigit() or int(raw) > MAX_OFFSET:
        raise InvalidRequest(
            f"'{raw}' is not a whole number from 0 to {MAX_OFFSET}.", expression=where
        )
    return int(raw)


def _parse_include(raw: str, where: str) -> Include:
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise InvalidRequest(
            f"_include={raw} must be Type:parameter[:TargetType].", expression=where
        )
    source, param = parts[0], parts[1]
    spec = search_parameters().get(source, {}).get(param)
    if spec is None or spec.type != "reference":
        raise InvalidRequest(
            f"_include={raw}: {source} has no reference parameter '{param}'.", expression=where
        )
    return Include(source, param, parts[2] if len(parts) == 3 else None)


def _criterion(resource_type: str, name: str, modifier: str | None, raw: str) -> Criterion:
    values = tuple(v for v in raw.split(",") if v != "")
    where = f"{resource_type}?{name}"
    if not values:
        raise InvalidRequest(f"Search parameter '{name}' has no value.", expression=where)
    spec = search_parameters()[resource_type].get(name)
    allowed = {"missing"}
    if spec is not None and spec.type == "string":
        allowed |= {"contains"}
    if spec is not None and spec.type == "reference":
        allowed |= set(spec.targets or search_parameters())
    if modifier is not None and modifier not in allowed:
        raise InvalidRequest(
            f"Modifier ':{modifier}' is not supported on '{name}'.", expression=where
        )
    if modifier == "missing" and raw not in ("true", "false"):
        raise InvalidRequest(f"{name}:missing must be true or false.", expression=where)
    if modifier != "missing" and (name == "_lastUpdated" or (spec and spec.type == "date")):
        for value in values:
            _date_criterion_bounds(value, where)  # fail early on a bad date
    return Criterion(name, modifier, values)


def _date_criterion_bounds(value: str, where: str) -> tuple[str, datetime, datetime]:
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    text = value[2:] if value[:2] in DATE_PREFIXES else value
    try:
        low, high = date_range(text)
    except ValueError as exc:
        raise InvalidRequest(
            f"'{value}' is not a valid date search value: {exc}.", expression=where
        ) from exc
    return prefix, low, high


def _point_condition(
    prefix: str, moment: Any, p_low: datetime, p_high: datetime
) -> ColumnElement[bool]:
    """The same comparison for an exact instant (such as _lastUpdated)."""
    inside: ColumnElement[bool] = and_(moment >= p_low, moment < p_high)
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": inside,
        "ne": not_(inside),
        "lt": moment < p_low,
        "gt": moment >= p_high,
        "le": moment < p_high,
        "ge": moment >= p_low,
        "sa": moment >= p_high,
        "eb": moment < p_low,
    }
    return conditions[prefix]


def _range_condition(
    prefix: str, low: Any, high: Any, p_low: datetime, p_high: datetime
) -> ColumnElement[bool]:
    """FHIR R4 search §3.1.1.5.3: compare the stored range [low, high) with the parameter's.

    ge and le match a target that overlaps the value's range or lies beyond it (as HAPI
    reads the spec): `le2024-02-20` finds a course of treatment that began that day.
    """
    contained: ColumnElement[bool] = and_(low >= p_low, high <= p_high)
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": contained,
        "ne": not_(contained),
        "lt": low < p_low,
        "gt": high > p_high,
        "le": low < p_high,
        "ge": high > p_low,
        "sa": low >= p_high,
        "eb": high <= p_low,
    }
    return conditions[prefix]


class SearchRunner:
    """Runs SearchQuery objects in `session`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def search(
        self, query: SearchQuery, visible: VisibleRows | None = None, *, with_total: bool = True
    ) -> SearchPage:
        """Run `query`; `visible(type)` limits matches and includes to what a caller may see.

        Without `with_total` the page's total is only the number of matches on it (for
        conditional matches, which need no count of everything).
        """
        select_matches = self.matching(query)
        if visible is not None:
            select_matches = select_matches.where(visible(query.resource_type))
        ordered = select_matches.order_by(*_order(query.sort)).limit(query.count)
        rows = list(self.session.scalars(ordered.offset(query.offset)))
        matches = [stored_from_row(row) for row in rows]
        total = len(matches)
        if with_total:
            count = select(func.count()).select_from(select_matches.subquery())
            total = self.session.scalar(count) or 0
        return SearchPage(matches, self._included(matches, query.includes, visible), total)

    def matching(self, query: SearchQuery) -> Select[ResourceRow]:
        """A SELECT of the current, undeleted resources the query's criteria match."""
        statement = select(ResourceRow).where(
            ResourceRow.res_type == query.resource_type, ResourceRow.deleted == false()
        )
        known = search_parameters()[query.resource_type]
        for criterion in query.criteria:
            spec = known.get(criterion.name)
            statement = statement.where(
                or_(
                    *[
                        self._condition(query.resource_type, criterion, spec, v)
                        for v in criterion.values
                    ]
                )
            )
        return statement

    def _condition(
        self, resource_type: str, criterion: Criterion, spec: SearchParameter | None, value: str
    ) -> ColumnElement[bool]:
        if criterion.name in ("_id", "_lastUpdated") and criterion.modifier == "missing":
            return false() if value == "true" else true()  # every resource has both
        if criterion.name == "_id":
            return ResourceRow.res_id == value
        if criterion.name == "_lastUpdated":
            prefix, p_low, p_high = _date_criterion_bounds(value, criterion.name)
            return _point_condition(prefix, ResourceRow.last_updated, p_low, p_high)
        assert spec is not None
        # An uncorrelated IN (…) lets the database start from the index of values rather
        # than test every resource of the type (a correlated EXISTS did, on PostgreSQL).
        index = SearchIndexRow
        having = select(index.res_id).where(
            index.res_type == resource_type, index.param == spec.name
        )
        if criterion.modifier == "missing":
            present = ResourceRow.res_id.in_(having)
            return not_(present) if value == "true" else present
        return ResourceRow.res_id.in_(
            having.where(_value_condition(spec, criterion.modifier, value))
        )

    def _included(
        self,
        matches: list[StoredResource],
        includes: list[Include],
        visible: VisibleRows | None,
    ) -> list[StoredResource]:
        if not matches or not includes:
            return []
        seen = {(m.resource_type, m.resource_id) for m in matches}
        wanted: list[tuple[str, str]] = []
        for include in includes:
            rows = self.session.execute(
                select(SearchIndexRow.system, SearchIndexRow.value).where(
                    SearchIndexRow.res_type == include.source_type,
                    SearchIndexRow.param == include.param,
                    SearchIndexRow.res_id.in_(
                        [m.resource_id for m in matches if m.resource_type == include.source_type]
                    ),
                )
            )
            for target_type, target_id in rows:
                key = (str(target_type), str(target_id))
                if include.target_type in (None, key[0]) and key not in seen:
                    seen.add(key)
                    wanted.append(key)
        included = []
        for target_type, target_id in wanted:
            statement = select(ResourceRow).where(
                ResourceRow.res_type == target_type,
                ResourceRow.res_id == target_id,
                ResourceRow.deleted == false(),
            )
            if visible is not None:
                statement = statement.where(visible(target_type))
            row = self.session.scalar(statement)
            if row is not None:
                included.append(stored_from_row(row))
        return included


def _order(sort: str) -> list[Any]:
    column = ResourceRow.res_id if sort.lstrip("-") == "_id" else ResourceRow.last_updated
    if sort.startswith("-"):
        return [column.desc(), ResourceRow.res_id.desc()]
    return [column.asc(), ResourceRow.res_id.asc()]


def _value_condition(
    spec: SearchParameter, modifier: str | None, value: str
) -> ColumnElement[bool]:
    index = SearchIndexRow
    if spec.type == "token":
        if "|" not in value:
            return index.value == value
        system, _, code = value.partition("|")
        system_match = index.system.is_(None) if system == "" else index.system == system
        return system_match if code == "" else and_(system_match, index.value == code)
    if spec.type == "string":
        text = _escape_like(normalise_text(value))
        pattern = f"%{text}%" if modifier == "contains" else f"{text}%"
        return index.value.like(pattern, escape="\\")
    if spec.type == "reference":
        target = split_reference(value)
        if target is not None:
            return and_(index.system == target[0], index.value == target[1])
        if modifier:  # subject:Patient=123
            return and_(index.system == modifier, index.value == value)
        return index.value == value
    if spec.type == "date":
        prefix, p_low, p_high = _date_criterion_bounds(value, spec.name)
        return and_(
            index.low.is_not(None), _range_condition(prefix, index.low, index.high, p_low, p_high)
        )
    return true()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
