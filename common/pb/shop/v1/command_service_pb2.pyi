from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_OUTCOME_UNSPECIFIED: _ClassVar[PaymentOutcome]
    PAYMENT_OUTCOME_CAPTURED: _ClassVar[PaymentOutcome]
    PAYMENT_OUTCOME_FAILED: _ClassVar[PaymentOutcome]
    PAYMENT_OUTCOME_REFUNDED: _ClassVar[PaymentOutcome]
PAYMENT_OUTCOME_UNSPECIFIED: PaymentOutcome
PAYMENT_OUTCOME_CAPTURED: PaymentOutcome
PAYMENT_OUTCOME_FAILED: PaymentOutcome
PAYMENT_OUTCOME_REFUNDED: PaymentOutcome

class CommandReply(_message.Message):
    __slots__ = ("id", "version", "consistency_token")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    consistency_token: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class CreateProductRequest(_message.Message):
    __slots__ = ("name", "description", "price_cents", "currency", "category", "stock", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    stock: int
    request_id: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., price_cents: _Optional[int] = ..., currency: _Optional[str] = ..., category: _Optional[str] = ..., stock: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateProductRequest(_message.Message):
    __slots__ = ("id", "name", "description", "price_cents", "currency", "category", "stock", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    stock: int
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., price_cents: _Optional[int] = ..., currency: _Optional[str] = ..., category: _Optional[str] = ..., stock: _Optional[int] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteProductRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateCustomerRequest(_message.Message):
    __slots__ = ("name", "email", "address", "city", "postal_code", "country", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    email: str
    address: str
    city: str
    postal_code: str
    country: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., email: _Optional[str] = ..., address: _Optional[str] = ..., city: _Optional[str] = ..., postal_code: _Optional[str] = ..., country: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateCustomerRequest(_message.Message):
    __slots__ = ("id", "name", "email", "address", "city", "postal_code", "country", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    email: str
    address: str
    city: str
    postal_code: str
    country: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., address: _Optional[str] = ..., city: _Optional[str] = ..., postal_code: _Optional[str] = ..., country: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteCustomerRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("customer_id", "items", "request_id")
    class Item(_message.Message):
        __slots__ = ("product_id", "quantity")
        PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
        QUANTITY_FIELD_NUMBER: _ClassVar[int]
        product_id: str
        quantity: int
        def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    items: _containers.RepeatedCompositeFieldContainer[PlaceOrderRequest.Item]
    request_id: str
    def __init__(self, customer_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PlaceOrderRequest.Item, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ConfirmOrderRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class ShipOrderRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeliverOrderRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteOrderRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateWebhookSubscriptionRequest(_message.Message):
    __slots__ = ("url", "event_types", "description", "request_id")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    description: str
    request_id: str
    def __init__(self, url: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DisableWebhookSubscriptionRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateWebhookSecretRequest(_message.Message):
    __slots__ = ("id", "expected_version", "request_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_version: int
    request_id: str
    def __init__(self, id: _Optional[str] = ..., expected_version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class WebhookSecretReply(_message.Message):
    __slots__ = ("id", "version", "consistency_token", "secret")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    consistency_token: str
    secret: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ..., secret: _Optional[str] = ...) -> None: ...

class RecordPaymentResultRequest(_message.Message):
    __slots__ = ("order_id", "outcome", "provider_charge_id", "provider_refund_id", "amount_cents", "currency", "reason", "retryable", "request_id")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_CHARGE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REFUND_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    outcome: PaymentOutcome
    provider_charge_id: str
    provider_refund_id: str
    amount_cents: int
    currency: str
    reason: str
    retryable: bool
    request_id: str
    def __init__(self, order_id: _Optional[str] = ..., outcome: _Optional[_Union[PaymentOutcome, str]] = ..., provider_charge_id: _Optional[str] = ..., provider_refund_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., reason: _Optional[str] = ..., retryable: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...
