import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TopProductsBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOP_PRODUCTS_BY_UNSPECIFIED: _ClassVar[TopProductsBy]
    TOP_PRODUCTS_BY_REVENUE: _ClassVar[TopProductsBy]
    TOP_PRODUCTS_BY_UNITS: _ClassVar[TopProductsBy]
TOP_PRODUCTS_BY_UNSPECIFIED: TopProductsBy
TOP_PRODUCTS_BY_REVENUE: TopProductsBy
TOP_PRODUCTS_BY_UNITS: TopProductsBy

class AnalyticsFreshness(_message.Message):
    __slots__ = ("sequence", "current_to", "consistency_token")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TO_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    current_to: _timestamp_pb2.Timestamp
    consistency_token: str
    def __init__(self, sequence: _Optional[int] = ..., current_to: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class CustomerCurrencyStats(_message.Message):
    __slots__ = ("currency", "orders", "lifetime_value_cents", "avg_order_value_cents", "payments", "paid_value_cents")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    AVG_ORDER_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    PAID_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    orders: int
    lifetime_value_cents: int
    avg_order_value_cents: int
    payments: int
    paid_value_cents: int
    def __init__(self, currency: _Optional[str] = ..., orders: _Optional[int] = ..., lifetime_value_cents: _Optional[int] = ..., avg_order_value_cents: _Optional[int] = ..., payments: _Optional[int] = ..., paid_value_cents: _Optional[int] = ...) -> None: ...

class CustomerStats(_message.Message):
    __slots__ = ("customer_id", "total_orders", "cancelled_orders", "first_order_at", "last_order_at", "by_currency", "freshness", "total_payments")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ORDERS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_ORDERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ORDER_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ORDER_AT_FIELD_NUMBER: _ClassVar[int]
    BY_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    total_orders: int
    cancelled_orders: int
    first_order_at: _timestamp_pb2.Timestamp
    last_order_at: _timestamp_pb2.Timestamp
    by_currency: _containers.RepeatedCompositeFieldContainer[CustomerCurrencyStats]
    freshness: AnalyticsFreshness
    total_payments: int
    def __init__(self, customer_id: _Optional[str] = ..., total_orders: _Optional[int] = ..., cancelled_orders: _Optional[int] = ..., first_order_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_order_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., by_currency: _Optional[_Iterable[_Union[CustomerCurrencyStats, _Mapping]]] = ..., freshness: _Optional[_Union[AnalyticsFreshness, _Mapping]] = ..., total_payments: _Optional[int] = ...) -> None: ...

class ProductCurrencySales(_message.Message):
    __slots__ = ("currency", "units_sold", "orders_count", "revenue_cents")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    UNITS_SOLD_FIELD_NUMBER: _ClassVar[int]
    ORDERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    units_sold: int
    orders_count: int
    revenue_cents: int
    def __init__(self, currency: _Optional[str] = ..., units_sold: _Optional[int] = ..., orders_count: _Optional[int] = ..., revenue_cents: _Optional[int] = ...) -> None: ...

class ProductSalesStats(_message.Message):
    __slots__ = ("product_id", "units_sold", "orders_count", "last_sold_at", "top_customer_id", "by_currency", "freshness")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_SOLD_FIELD_NUMBER: _ClassVar[int]
    ORDERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SOLD_AT_FIELD_NUMBER: _ClassVar[int]
    TOP_CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    BY_CURRENCY_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    units_sold: int
    orders_count: int
    last_sold_at: _timestamp_pb2.Timestamp
    top_customer_id: str
    by_currency: _containers.RepeatedCompositeFieldContainer[ProductCurrencySales]
    freshness: AnalyticsFreshness
    def __init__(self, product_id: _Optional[str] = ..., units_sold: _Optional[int] = ..., orders_count: _Optional[int] = ..., last_sold_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., top_customer_id: _Optional[str] = ..., by_currency: _Optional[_Iterable[_Union[ProductCurrencySales, _Mapping]]] = ..., freshness: _Optional[_Union[AnalyticsFreshness, _Mapping]] = ...) -> None: ...

class TopProduct(_message.Message):
    __slots__ = ("product_id", "currency", "units_sold", "revenue_cents", "orders_count")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    UNITS_SOLD_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_COUNT_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    currency: str
    units_sold: int
    revenue_cents: int
    orders_count: int
    def __init__(self, product_id: _Optional[str] = ..., currency: _Optional[str] = ..., units_sold: _Optional[int] = ..., revenue_cents: _Optional[int] = ..., orders_count: _Optional[int] = ...) -> None: ...

class TopCustomer(_message.Message):
    __slots__ = ("customer_id", "currency", "orders", "lifetime_value_cents", "avg_order_value_cents")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    AVG_ORDER_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    currency: str
    orders: int
    lifetime_value_cents: int
    avg_order_value_cents: int
    def __init__(self, customer_id: _Optional[str] = ..., currency: _Optional[str] = ..., orders: _Optional[int] = ..., lifetime_value_cents: _Optional[int] = ..., avg_order_value_cents: _Optional[int] = ...) -> None: ...

class MonthlyRevenue(_message.Message):
    __slots__ = ("month", "currency", "orders", "revenue_cents", "avg_order_value_cents", "new_customers", "returning_customers")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    AVG_ORDER_VALUE_CENTS_FIELD_NUMBER: _ClassVar[int]
    NEW_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    RETURNING_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    month: str
    currency: str
    orders: int
    revenue_cents: int
    avg_order_value_cents: int
    new_customers: int
    returning_customers: int
    def __init__(self, month: _Optional[str] = ..., currency: _Optional[str] = ..., orders: _Optional[int] = ..., revenue_cents: _Optional[int] = ..., avg_order_value_cents: _Optional[int] = ..., new_customers: _Optional[int] = ..., returning_customers: _Optional[int] = ...) -> None: ...
