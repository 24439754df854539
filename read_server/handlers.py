"""Registration of QueryService with pass-through response serialization."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from common.pb.shop.v1 import query_service_pb2 as qs
from read_server.servicer import QueryServicer
from read_server.wire import passthrough

SERVICE_NAME = qs.DESCRIPTOR.services_by_name["QueryService"].full_name


def _unary(
    behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[bytes]],
    request_type: Any,
) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request_type.FromString,
        response_serializer=passthrough,
    )


def add_query_service(server: grpc.aio.Server, servicer: QueryServicer) -> str:
    """Add QueryService to ``server``; returns its full name (for reflection and health)."""
    handlers = {
        "GetProduct": _unary(servicer.get_product, qs.GetProductRequest),
        "ListProducts": _unary(servicer.list_products, qs.ListProductsRequest),
        "GetCustomer": _unary(servicer.get_customer, qs.GetCustomerRequest),
        "ListCustomers": _unary(servicer.list_customers, qs.ListCustomersRequest),
        "GetOrder": _unary(servicer.get_order, qs.GetOrderRequest),
        "ListOrders": _unary(servicer.list_orders, qs.ListOrdersRequest),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # Lets the C core route these methods without the generic lookup, as generated code does.
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    return SERVICE_NAME
