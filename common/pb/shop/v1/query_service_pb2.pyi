import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from common.pb.shop.v1 import analytics_pb2 as _analytics_pb2
from common.pb.shop.v1 import history_pb2 as _history_pb2
from common.pb.shop.v1 import shop_pb2 as _shop_pb2
from common.pb.shop.v1 import webhooks_pb2 as _webhooks_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_PROJECTION: _ClassVar[Source]
    SOURCE_READ_MODEL: _ClassVar[Source]
    SOURCE_WRITE_MODEL: _ClassVar[Source]

class WatchKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_KIND_UNSPECIFIED: _ClassVar[WatchKind]
    WATCH_KIND_SNAPSHOT: _ClassVar[WatchKind]
    WATCH_KIND_CHANGE: _ClassVar[WatchKind]
    WATCH_KIND_RESYNC: _ClassVar[WatchKind]
    WATCH_KIND_FELL_BEHIND: _ClassVar[WatchKind]
    WATCH_KIND_DELETED: _ClassVar[WatchKind]
SOURCE_UNSPECIFIED: Source
SOURCE_PROJECTION: Source
SOURCE_READ_MODEL: Source
SOURCE_WRITE_MODEL: Source
WATCH_KIND_UNSPECIFIED: WatchKind
WATCH_KIND_SNAPSHOT: WatchKind
WATCH_KIND_CHANGE: WatchKind
WATCH_KIND_RESYNC: WatchKind
WATCH_KIND_FELL_BEHIND: WatchKind
WATCH_KIND_DELETED: WatchKind

class GetProductRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "category", "source", "consistency_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    category: str
    source: Source
    consistency_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., category: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_shop_pb2.Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[_shop_pb2.Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListCustomersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "source", "consistency_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    source: Source
    consistency_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListCustomersResponse(_message.Message):
    __slots__ = ("customers", "next_page_token")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[_shop_pb2.Customer]
    next_page_token: str
    def __init__(self, customers: _Optional[_Iterable[_Union[_shop_pb2.Customer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "customer_id", "status", "source", "consistency_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    customer_id: str
    status: _shop_pb2.OrderStatus
    source: Source
    consistency_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., customer_id: _Optional[str] = ..., status: _Optional[_Union[_shop_pb2.OrderStatus, str]] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[_shop_pb2.Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[_shop_pb2.Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAggregateHistoryRequest(_message.Message):
    __slots__ = ("aggregate_type", "aggregate_id", "page_size", "page_token")
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    aggregate_type: _history_pb2.AggregateType
    aggregate_id: str
    page_size: int
    page_token: str
    def __init__(self, aggregate_type: _Optional[_Union[_history_pb2.AggregateType, str]] = ..., aggregate_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetAggregateHistoryResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_history_pb2.HistoryEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_history_pb2.HistoryEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetProductAsOfRequest(_message.Message):
    __slots__ = ("id", "as_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCustomerAsOfRequest(_message.Message):
    __slots__ = ("id", "as_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetOrderAsOfRequest(_message.Message):
    __slots__ = ("id", "as_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCustomerStatsRequest(_message.Message):
    __slots__ = ("customer_id", "source", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    source: Source
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetProductSalesStatsRequest(_message.Message):
    __slots__ = ("product_id", "source", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    source: Source
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListTopProductsRequest(_message.Message):
    __slots__ = ("by", "limit", "currency", "source", "consistency_token")
    BY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    by: _analytics_pb2.TopProductsBy
    limit: int
    currency: str
    source: Source
    consistency_token: str
    def __init__(self, by: _Optional[_Union[_analytics_pb2.TopProductsBy, str]] = ..., limit: _Optional[int] = ..., currency: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListTopProductsResponse(_message.Message):
    __slots__ = ("products", "freshness")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_analytics_pb2.TopProduct]
    freshness: _analytics_pb2.AnalyticsFreshness
    def __init__(self, products: _Optional[_Iterable[_Union[_analytics_pb2.TopProduct, _Mapping]]] = ..., freshness: _Optional[_Union[_analytics_pb2.AnalyticsFreshness, _Mapping]] = ...) -> None: ...

class ListTopCustomersRequest(_message.Message):
    __slots__ = ("limit", "currency", "source", "consistency_token")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    currency: str
    source: Source
    consistency_token: str
    def __init__(self, limit: _Optional[int] = ..., currency: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListTopCustomersResponse(_message.Message):
    __slots__ = ("customers", "freshness")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[_analytics_pb2.TopCustomer]
    freshness: _analytics_pb2.AnalyticsFreshness
    def __init__(self, customers: _Optional[_Iterable[_Union[_analytics_pb2.TopCustomer, _Mapping]]] = ..., freshness: _Optional[_Union[_analytics_pb2.AnalyticsFreshness, _Mapping]] = ...) -> None: ...

class GetMonthlyRevenueRequest(_message.Message):
    __slots__ = ("from_month", "to_month", "currency", "source", "consistency_token")
    FROM_MONTH_FIELD_NUMBER: _ClassVar[int]
    TO_MONTH_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    from_month: str
    to_month: str
    currency: str
    source: Source
    consistency_token: str
    def __init__(self, from_month: _Optional[str] = ..., to_month: _Optional[str] = ..., currency: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetMonthlyRevenueResponse(_message.Message):
    __slots__ = ("months", "freshness")
    MONTHS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    months: _containers.RepeatedCompositeFieldContainer[_analytics_pb2.MonthlyRevenue]
    freshness: _analytics_pb2.AnalyticsFreshness
    def __init__(self, months: _Optional[_Iterable[_Union[_analytics_pb2.MonthlyRevenue, _Mapping]]] = ..., freshness: _Optional[_Union[_analytics_pb2.AnalyticsFreshness, _Mapping]] = ...) -> None: ...

class SearchProductsRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token", "consistency_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    consistency_token: str
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class SearchProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_shop_pb2.Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[_shop_pb2.Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchCustomersRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token", "consistency_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    consistency_token: str
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class SearchCustomersResponse(_message.Message):
    __slots__ = ("customers", "next_page_token")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[_shop_pb2.Customer]
    next_page_token: str
    def __init__(self, customers: _Optional[_Iterable[_Union[_shop_pb2.Customer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListWebhookSubscriptionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "consistency_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    consistency_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListWebhookSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[_webhooks_pb2.WebhookSubscription]
    next_page_token: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[_webhooks_pb2.WebhookSubscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesRequest(_message.Message):
    __slots__ = ("subscription_id", "status", "page_size", "page_token", "consistency_token")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    status: _webhooks_pb2.WebhookDeliveryStatus
    page_size: int
    page_token: str
    consistency_token: str
    def __init__(self, subscription_id: _Optional[str] = ..., status: _Optional[_Union[_webhooks_pb2.WebhookDeliveryStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListWebhookDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[_webhooks_pb2.WebhookDelivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[_webhooks_pb2.WebhookDelivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchProductRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token", "resume_after")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    resume_after: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ..., resume_after: _Optional[str] = ...) -> None: ...

class WatchCustomerRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token", "resume_after")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    resume_after: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ..., resume_after: _Optional[str] = ...) -> None: ...

class WatchOrderRequest(_message.Message):
    __slots__ = ("id", "source", "consistency_token", "resume_after")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: Source
    consistency_token: str
    resume_after: str
    def __init__(self, id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ..., resume_after: _Optional[str] = ...) -> None: ...

class WatchOrdersRequest(_message.Message):
    __slots__ = ("customer_id", "source", "consistency_token", "resume_after")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    source: Source
    consistency_token: str
    resume_after: str
    def __init__(self, customer_id: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., consistency_token: _Optional[str] = ..., resume_after: _Optional[str] = ...) -> None: ...

class ProductUpdate(_message.Message):
    __slots__ = ("kind", "position", "product")
    KIND_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    kind: WatchKind
    position: str
    product: _shop_pb2.Product
    def __init__(self, kind: _Optional[_Union[WatchKind, str]] = ..., position: _Optional[str] = ..., product: _Optional[_Union[_shop_pb2.Product, _Mapping]] = ...) -> None: ...

class CustomerUpdate(_message.Message):
    __slots__ = ("kind", "position", "customer")
    KIND_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    kind: WatchKind
    position: str
    customer: _shop_pb2.Customer
    def __init__(self, kind: _Optional[_Union[WatchKind, str]] = ..., position: _Optional[str] = ..., customer: _Optional[_Union[_shop_pb2.Customer, _Mapping]] = ...) -> None: ...

class OrderUpdate(_message.Message):
    __slots__ = ("kind", "position", "order")
    KIND_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    kind: WatchKind
    position: str
    order: _shop_pb2.Order
    def __init__(self, kind: _Optional[_Union[WatchKind, str]] = ..., position: _Optional[str] = ..., order: _Optional[_Union[_shop_pb2.Order, _Mapping]] = ...) -> None: ...
