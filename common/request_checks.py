"""Checks every request gets before its servicer runs, from the request's
descriptor: a safety net under each field's own validation.

* Every string field (nested and repeated ones too) is at most a few
  hundred characters (``RequestRules.max_string``, longer per field where a
  value may be longer): a 1 MB value is refused naming its field, never
  echoed back.
* A field that carries an ID (named ``id``, ``*_id``, ``ids`` or ``*_ids``)
  holds one, in the server's one form: for the public APIs a canonical
  lower-case UUID (``uuid_problem``). An ID in any other form is
  INVALID_ARGUMENT naming the field, never a NOT_FOUND that another spelling
  would have found, nor a database error.
* A float field is finite: NaN and infinity are no timeout.

``RequestCheckInterceptor`` runs them on every unary and server-streaming
call of a server and aborts with INVALID_ARGUMENT (a ``BadRequest`` detail
names every bad field, by request path such as ``vm.nics[0].network_id``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.grpc_errors import InvalidArgument, Violation, abort, quote, wrap_unary_handler

# Long enough for every value the APIs take (a DNS name is 253, a BPF filter
# 1024); longer values are refused whatever the field.
MAX_STRING = 1024
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
IdRule = Callable[[str], "str | None"]


def uuid_problem(value: str) -> str | None:
    """IDs are canonical UUIDs: lower case, with dashes, no braces."""
    if UUID_RE.fullmatch(value):
        return None
    if UUID_RE.fullmatch(value.lower()):
        return f"{quote(value)} is not canonical: IDs are lower-case UUIDs"
    return f"{quote(value)} is not a valid ID (a lower-case UUID)"


def is_id_field(name: str) -> bool:
    return name in ("id", "ids") or name.endswith(("_id", "_ids"))


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRules:
    max_string: int = MAX_STRING
    # Longer caps by field name (a router's whole config has long values).
    long_strings: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # The form of an ID field's value (None: IDs are only length-capped).
    id_rule: IdRule | None = uuid_problem
    # Field names that look like IDs but are not ("device_id": free text).
    not_ids: frozenset[str] = frozenset()


def _scalar(rules: RequestRules, fd: FieldDescriptor, path: str, value: Any,
            out: list[Violation]) -> None:
    if fd.type == FieldDescriptor.TYPE_STRING:
        cap = rules.long_strings.get(fd.name, rules.max_string)
        if len(value) > cap:
            out.append(Violation(path, f"must be at most {cap} characters "
                                       f"(got {len(value)}: {quote(value)})"))
        elif (value and rules.id_rule is not None and is_id_field(fd.name)
              and fd.name not in rules.not_ids
              and (problem := rules.id_rule(value)) is not None):
            out.append(Violation(path, problem))
    elif fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if not math.isfinite(value):
            out.append(Violation(path, f"must be a finite number (got {value})"))
    elif fd.type == FieldDescriptor.TYPE_BYTES:
        cap = rules.long_strings.get(fd.name, rules.max_string)
        if len(value) > cap:
            out.append(Violation(path, f"must be at most {cap} bytes (got {len(value)})"))


def violations(msg: Message, rules: RequestRules, prefix: str = "") -> list[Violation]:
    """Every bad field of ``msg`` (set fields only: unset ones are empty)."""
    out: list[Violation] = []
    for fd, value in msg.ListFields():
        path = prefix + fd.name
        if fd.message_type is not None:
            if fd.message_type.full_name.startswith("google.protobuf."):
                continue  # timestamps, field masks: no strings of ours
            if fd.message_type.GetOptions().map_entry:
                key_fd = fd.message_type.fields_by_name["key"]
                value_fd = fd.message_type.fields_by_name["value"]
                for key, item in value.items():
                    _scalar(rules, key_fd, f"{path}[key]", key, out)
                    if value_fd.message_type is not None:
                        out += violations(item, rules, f"{path}[{quote(str(key))}].")
                    else:
                        _scalar(rules, value_fd, f"{path}[{quote(str(key))}]", item, out)
            elif fd.is_repeated:
                for i, item in enumerate(value):
                    out += violations(item, rules, f"{path}[{i}].")
            else:
                out += violations(value, rules, path + ".")
        elif fd.is_repeated:
            for i, item in enumerate(value):
                _scalar(rules, fd, f"{path}[{i}]", item, out)
        else:
            _scalar(rules, fd, path, value, out)
    return out


def check_request(msg: Message, rules: RequestRules) -> None:
    """Raise InvalidArgument naming every bad field of ``msg``."""
    bad = violations(msg, rules)
    if bad:
        raise InvalidArgument(bad)


# Which rules a method's requests get ("/pkg.Service/Method"); None: none.
RulesFor = Callable[[str], "RequestRules | None"]


class RequestCheckInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Runs ``check_request`` on every request before the servicer; aborts
    the call with INVALID_ARGUMENT itself (it needs no error mapping)."""

    def __init__(self, rules: RequestRules | RulesFor) -> None:
        self._rules_for: RulesFor = (
            (lambda method: rules) if isinstance(rules, RequestRules) else rules)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        rules = self._rules_for(str(handler_call_details.method))
        if handler is None or rules is None:
            return handler

        def checked(request: Any, context: grpc.ServicerContext) -> bool:
            bad = violations(request, rules) if isinstance(request, Message) else []
            if bad:
                abort(context, InvalidArgument(bad))
                return False
            return True

        if handler.unary_stream is not None:
            behaviour = handler.unary_stream

            def streamed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                if checked(request, context):
                    yield from behaviour(request, context)

            return grpc.unary_stream_rpc_method_handler(
                streamed, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        def wrap(behaviour: Callable[[Any, grpc.ServicerContext], Any]) -> Callable[..., Any]:
            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                checked(request, context)
                return behaviour(request, context)

            return unary

        return wrap_unary_handler(handler, wrap)
