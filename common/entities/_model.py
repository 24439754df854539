"""What an entity declares once: :class:`Entity` and its parts.

An entity is one kind of document the read side serves (a product, a customer, an
order): its protobuf type, how events fold into it, the lists it offers, its read-model
table and how a row of it or of the write model becomes the document. The projector's
projections, both stores, verify, the rebuild, the read sources, the query servicer and
the CLI all take these from :mod:`common.entities`; none of them names an entity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.events import StoredEvent

ALL = "all"  # the index (Redis) / list every entity has: every live document

# How a list filter's value is read from a request and compared in SQL.
FilterKind = Literal["text", "uuid", "enum"]
Reducer = Callable[[Message | None, StoredEvent], Message | None]


@dataclass(frozen=True, slots=True)
class Index:
    """A list narrowed by ``fields`` (one Redis sorted set per combination of values,
    ``<name>:<value>[:<value>]``); ``fields`` are document fields, which are also the
    columns of the read model and the write model."""

    name: str
    fields: tuple[str, ...]

    def key(self, values: Sequence[str]) -> str:
        return ":".join((self.name, *values))


@dataclass(frozen=True, slots=True)
class Embed:
    """Another aggregate's events that change this entity's documents: an order shows
    its customer's name and email, so a ``CustomerUpdated`` rewrites that customer's
    orders. ``by`` is the document field naming the other aggregate."""

    aggregate_type: str
    by: str
    folds: frozenset[str]  # the other aggregate's event types it applies
    changes: Callable[[StoredEvent], bool]  # whether this event changes what is embedded
    apply: Callable[[Message, StoredEvent], Message]  # the document, changed (or as it was)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a read-model table: its ``unnest`` element type, how a document
    gives its value, and the select expression when the column needs a cast."""

    name: str
    array_type: str
    value: Callable[[Any], object]
    select: str = ""

    @property
    def select_expr(self) -> str:
        return self.select or f"u.{self.name}"


@dataclass(frozen=True, slots=True)
class WriteModel:
    """Where the write model keeps the entity: a ``SELECT`` (no WHERE) whose columns have
    the document's names, the alias owning ``id``/``created_at`` (``"o."``) and the
    condition that keeps only live rows."""

    select: str
    live: str
    alias: str = ""

    def all_live(self) -> str:
        return f"{self.select} WHERE {self.live}"


@dataclass(frozen=True, slots=True)
class Entity:
    """Everything the read side knows of one entity (see the module docstring)."""

    name: str  # the family: products | customers | orders (projection names, Redis keys)
    label: str  # one of them, in messages: "product"
    aggregate_type: str  # the aggregate whose events create, change and delete documents
    document: type[Message]
    fields: tuple[str, ...]  # its own fields, between id and version/created_at/updated_at
    reduce: Reducer  # one of its aggregate's events applied to a document
    folds: frozenset[str]  # its aggregate's event types ``reduce`` applies
    table: str  # the read-model table (schema ``read``)
    columns: tuple[Column, ...]  # that table's columns besides ``doc`` (the document bytes)
    from_row: Callable[[Mapping[str, Any]], Message]  # a write-model row -> the document
    write_model: WriteModel
    indexes: tuple[Index, ...] = ()  # the lists it offers besides ALL
    filters: Mapping[str, FilterKind] = field(default_factory=dict)  # the indexes' fields
    embeds: tuple[Embed, ...] = ()
    # Event types of the aggregates it reads that it deliberately leaves alone.
    ignores: frozenset[str] = frozenset()

    @property
    def consumes(self) -> tuple[str, ...]:
        """The aggregate types whose events it reads."""
        return (self.aggregate_type, *(e.aggregate_type for e in self.embeds))

    @property
    def get_rpc(self) -> str:
        """``GetProduct``: the QueryService method that gets one."""
        return "Get" + self.document.DESCRIPTOR.name

    @property
    def watch_rpc(self) -> str:
        """``WatchProduct``: the QueryService method that streams one's updates."""
        return "Watch" + self.document.DESCRIPTOR.name

    @property
    def list_rpc(self) -> str:
        """``ListProducts``: the QueryService method that lists them."""
        return "List" + self.name[:1].upper() + self.name[1:]

    def knows(self, event_type: str) -> bool:
        """Whether ``event_type`` is folded, applied as an embed or declared ignored."""
        return (
            event_type in self.folds
            or event_type in self.ignores
            or any(event_type in e.folds for e in self.embeds)
        )

    def index_for(self, where: Mapping[str, str]) -> str:
        """The index holding exactly the documents matching ``where`` (field -> value;
        empty: ALL); ValueError for a combination no index serves."""
        if not where:
            return ALL
        for index in self.indexes:
            if set(index.fields) == set(where):
                return index.key([where[f] for f in index.fields])
        raise ValueError(f"{self.name} cannot be listed by {sorted(where)}")

    def index_keys(self, doc: Message) -> list[str]:
        """Every index ``doc`` belongs to: ALL, and each index whose fields all have a
        value (an empty category is "no category": nothing lists by it)."""
        keys = [ALL]
        for index in self.indexes:
            values = [field_text(doc, f) for f in index.fields]
            if all(values):
                keys.append(index.key(values))
        return keys


def field_text(doc: Message, name: str) -> str:
    """A document field as filters and index keys spell it: enums by their name without
    the enum's prefix (``ORDER_STATUS_PENDING`` -> ``PENDING``), the rest as text."""
    descriptor = doc.DESCRIPTOR.fields_by_name[name]
    value = getattr(doc, name)
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        return enum_label(descriptor, int(value))
    return str(value)


def enum_label(descriptor: Any, number: int) -> str:
    """The name of enum value ``number`` of the field (a protobuf ``FieldDescriptor``, of
    either implementation) without the enum's prefix."""
    enum = descriptor.enum_type
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
    return str(enum.values_by_number[number].name).removeprefix(prefix + "_")
