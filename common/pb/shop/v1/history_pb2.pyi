import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from common.pb.shop.v1 import shop_pb2 as _shop_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AggregateType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_TYPE_UNSPECIFIED: _ClassVar[AggregateType]
    AGGREGATE_TYPE_PRODUCT: _ClassVar[AggregateType]
    AGGREGATE_TYPE_CUSTOMER: _ClassVar[AggregateType]
    AGGREGATE_TYPE_ORDER: _ClassVar[AggregateType]
    AGGREGATE_TYPE_WEBHOOK_SUBSCRIPTION: _ClassVar[AggregateType]
AGGREGATE_TYPE_UNSPECIFIED: AggregateType
AGGREGATE_TYPE_PRODUCT: AggregateType
AGGREGATE_TYPE_CUSTOMER: AggregateType
AGGREGATE_TYPE_ORDER: AggregateType
AGGREGATE_TYPE_WEBHOOK_SUBSCRIPTION: AggregateType

class EventMetadata(_message.Message):
    __slots__ = ("request_id", "peer", "user_agent", "subject")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    peer: str
    user_agent: str
    subject: str
    def __init__(self, request_id: _Optional[str] = ..., peer: _Optional[str] = ..., user_agent: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("event_type", "version", "sequence", "occurred_at", "payload_json", "schema_version", "metadata", "product_created", "product_updated", "product_stock_changed", "customer_created", "customer_updated", "order_placed", "order_status_changed")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_CREATED_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_UPDATED_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_STOCK_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_CREATED_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_UPDATED_FIELD_NUMBER: _ClassVar[int]
    ORDER_PLACED_FIELD_NUMBER: _ClassVar[int]
    ORDER_STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    version: int
    sequence: int
    occurred_at: _timestamp_pb2.Timestamp
    payload_json: str
    schema_version: int
    metadata: EventMetadata
    product_created: ProductCreated
    product_updated: ProductUpdated
    product_stock_changed: ProductStockChanged
    customer_created: CustomerCreated
    customer_updated: CustomerUpdated
    order_placed: OrderPlaced
    order_status_changed: OrderStatusChanged
    def __init__(self, event_type: _Optional[str] = ..., version: _Optional[int] = ..., sequence: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload_json: _Optional[str] = ..., schema_version: _Optional[int] = ..., metadata: _Optional[_Union[EventMetadata, _Mapping]] = ..., product_created: _Optional[_Union[ProductCreated, _Mapping]] = ..., product_updated: _Optional[_Union[ProductUpdated, _Mapping]] = ..., product_stock_changed: _Optional[_Union[ProductStockChanged, _Mapping]] = ..., customer_created: _Optional[_Union[CustomerCreated, _Mapping]] = ..., customer_updated: _Optional[_Union[CustomerUpdated, _Mapping]] = ..., order_placed: _Optional[_Union[OrderPlaced, _Mapping]] = ..., order_status_changed: _Optional[_Union[OrderStatusChanged, _Mapping]] = ...) -> None: ...

class ProductCreated(_message.Message):
    __slots__ = ("name", "description", "price_cents", "currency", "category", "stock")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    stock: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., price_cents: _Optional[int] = ..., currency: _Optional[str] = ..., category: _Optional[str] = ..., stock: _Optional[int] = ...) -> None: ...

class ProductUpdated(_message.Message):
    __slots__ = ("changes", "update_mask")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    changes: _shop_pb2.Product
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, changes: _Optional[_Union[_shop_pb2.Product, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class ProductStockChanged(_message.Message):
    __slots__ = ("order_id", "quantity", "stock")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    quantity: int
    stock: int
    def __init__(self, order_id: _Optional[str] = ..., quantity: _Optional[int] = ..., stock: _Optional[int] = ...) -> None: ...

class CustomerCreated(_message.Message):
    __slots__ = ("name", "email", "address", "city", "postal_code", "country")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    email: str
    address: str
    city: str
    postal_code: str
    country: str
    def __init__(self, name: _Optional[str] = ..., email: _Optional[str] = ..., address: _Optional[str] = ..., city: _Optional[str] = ..., postal_code: _Optional[str] = ..., country: _Optional[str] = ...) -> None: ...

class CustomerUpdated(_message.Message):
    __slots__ = ("changes", "update_mask")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    changes: _shop_pb2.Customer
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, changes: _Optional[_Union[_shop_pb2.Customer, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class OrderPlaced(_message.Message):
    __slots__ = ("order_number", "customer_id", "customer_name", "customer_email", "items", "total_cents", "currency", "status")
    ORDER_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_EMAIL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    order_number: str
    customer_id: str
    customer_name: str
    customer_email: str
    items: _containers.RepeatedCompositeFieldContainer[_shop_pb2.OrderItem]
    total_cents: int
    currency: str
    status: _shop_pb2.OrderStatus
    def __init__(self, order_number: _Optional[str] = ..., customer_id: _Optional[str] = ..., customer_name: _Optional[str] = ..., customer_email: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_shop_pb2.OrderItem, _Mapping]]] = ..., total_cents: _Optional[int] = ..., currency: _Optional[str] = ..., status: _Optional[_Union[_shop_pb2.OrderStatus, str]] = ...) -> None: ...

class OrderStatusChanged(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _shop_pb2.OrderStatus
    def __init__(self, status: _Optional[_Union[_shop_pb2.OrderStatus, str]] = ...) -> None: ...
