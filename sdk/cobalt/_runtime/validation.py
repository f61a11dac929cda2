"""Request bodies checked against an endpoint's signature, and the OpenAPI description.

Each endpoint gets one pydantic model, built from its parameters and type
hints: a parameter without a hint accepts any JSON value, defaults are
honoured, unknown fields are refused, and parameters the initializer's dict
provides are left out (they are injected, not read from the body). Fields
are named ``f0``, ``f1``... with the parameter names as aliases, so that any
parameter name works, even one pydantic reserves (``json``, ``schema``...).
A batched endpoint takes each body field as a list, one element per request,
so its model checks one request's element: ``text: list[str]`` reads
``{"text": "hi"}``.

Example:
    >>> def predict(model, text: str, n: int = 1) -> list[str]:
    ...     return [text] * n
    >>> body = RequestBody.of(predict, injected={"model"})
    >>> body.parse(b'{"text": "hi"}')
    {'text': 'hi', 'n': 1}
    >>> try:
    ...     body.parse(b'{"text": 3}')
    ... except BadRequest as exc:
    ...     print(exc.message)
    field 'text': Input should be a valid string
"""

from __future__ import annotations

import copy
import functools
import inspect
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

from cobalt._hints import hints_of, list_element
from cobalt_common.deploy import Route
from cobalt_common.errors import SpecError


class BadRequest(Exception):
    """A request body that does not fit the endpoint (answered 422)."""

    def __init__(self, message: str, field: str = "", detail: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.detail = list(detail)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field, "detail": self.detail}


def _loc_text(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _result_element(annotation: Any) -> Any:
    """What one request of a batched endpoint gets back: ``T`` of ``list[T]``, without
    the exception types a batch function may return in place of a result."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _result_element(args[0])
    sequence = origin in (list, Sequence) and len(args) == 1
    if not (sequence or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)):
        return None
    element = args[0]
    if typing.get_origin(element) in (typing.Union, types.UnionType):
        kept = [
            a
            for a in typing.get_args(element)
            if not (isinstance(a, type) and issubclass(a, BaseException))
        ]
        if not kept:
            return None
        return functools.reduce(operator.or_, kept) if len(kept) > 1 else kept[0]
    return element


class RequestBody:
    """How one endpoint reads its JSON body.

    Args:
        name: the endpoint's name, for messages.
        model: the pydantic model of the body.
        fields: (field name, parameter name) pairs.
        extra: whether the endpoint takes ``**kwargs`` (unknown fields go there).
    """

    def __init__(
        self,
        name: str,
        model: type[pydantic.BaseModel],
        fields: list[tuple[str, str]],
        extra: bool,
    ) -> None:
        self.name = name
        self.model = model
        self.fields = fields
        self.extra = extra
        self._validate = model.__pydantic_validator__.validate_json
        self.accepted = ", ".join(alias for _, alias in fields) or "no fields"

    @classmethod
    def of(
        cls, function: Callable[..., Any], injected: Iterable[str] = (), *, batched: bool = False
    ) -> RequestBody:
        """The body model of ``function``, leaving out parameters named in ``injected``.

        With ``batched``, each body parameter must be a ``list[T]`` (or have no
        hint) and the model reads one request's ``T``.

        Raises:
            SpecError: ``batched``, and a body parameter is not a list.
        """
        name = getattr(function, "__name__", "endpoint")
        hints = hints_of(function)
        skip = set(injected)
        definitions: dict[str, Any] = {}
        fields: list[tuple[str, str]] = []
        extra = False
        for param in inspect.signature(function).parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                extra = True
                continue
            if param.name in skip or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            field = f"f{len(fields)}"
            default = ... if param.default is inspect.Parameter.empty else param.default
            annotation = hints.get(param.name, Any)
            if batched:
                annotation = _batched_element(name, param.name, annotation)
            definitions[field] = (annotation, pydantic.Field(default, alias=param.name))
            fields.append((field, param.name))
        config = pydantic.ConfigDict(
            extra="allow" if extra else "forbid", arbitrary_types_allowed=True
        )
        title = "".join(part.title() for part in name.split("_")) + "Request"
        model = pydantic.create_model(title, __config__=config, **definitions)
        return cls(name, model, fields, extra)

    def parse(self, body: bytes) -> dict[str, Any]:
        """The keyword arguments in ``body``, checked; :class:`BadRequest` when it does not fit."""
        try:
            value = self._validate(body or b"{}")
        except pydantic.ValidationError as exc:
            raise self._explain(exc) from None
        kwargs = {alias: getattr(value, field) for field, alias in self.fields}
        if self.extra and value.__pydantic_extra__:
            kwargs.update(value.__pydantic_extra__)
        return kwargs

    def _explain(self, exc: pydantic.ValidationError) -> BadRequest:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
        first: ErrorDetails = errors[0]
        kind, loc = first["type"], first["loc"]
        if kind == "json_invalid":
            example = ", ".join(f"{a!r}: ..." for _, a in self.fields[:2]).replace("'", '"')
            return BadRequest(
                f"the request body is not valid JSON ({first['msg']}); send a JSON object "
                f"such as {{{example}}}.",
                "",
                detail,
            )
        if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
            return BadRequest(
                f"the request body must be a JSON object with the fields of {self.name} "
                f"({self.accepted}).",
                "",
                detail,
            )
        field = str(loc[0]) if loc else ""
        path = _loc_text(loc)
        if kind == "missing" and len(loc) == 1:
            message = f"field {field!r} is required by {self.name}"
        elif kind == "extra_forbidden" and len(loc) == 1:
            message = f"field {field!r} is not a parameter of {self.name}; it takes {self.accepted}"
        else:
            message = f"field {path!r}: {first['msg']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return BadRequest(message, field, detail)


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "error_id": {"type": "string"},
        "field": {"type": "string"},
        "detail": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["error"],
}
_ERRORS = {
    "401": "Missing or wrong bearer token.",
    "404": "Unknown deployment or route.",
    "413": "The request body is larger than the deployment accepts.",
    "422": "The body is not valid JSON, or a field is missing, unknown or of the wrong type.",
    "500": "The endpoint raised; error_id matches the replica's log.",
    "503": "No replica could take the request in time; retry after Retry-After seconds.",
}


def _batched_element(name: str, param: str, annotation: Any) -> Any:
    element = list_element(annotation)
    if element is None:
        shown = getattr(annotation, "__name__", None) or repr(annotation)
        raise SpecError(
            f"endpoint {name} is batched, so its body parameter {param!r} receives one value "
            f"per request as a list: annotate it {param}: list[{shown}], not {shown}. If it "
            "should come from the initializer, return it in the initializer's dict."
        )
    return element


def _return_schema(function: Callable[..., Any], route: Route) -> dict[str, Any]:
    annotation = hints_of(function).get("return")
    if annotation is None or route.streaming:
        return {}
    if route.batch is not None:
        annotation = _result_element(annotation)
        if annotation is None:
            return {}
    try:
        schema: dict[str, Any] = pydantic.TypeAdapter(annotation).json_schema(
            ref_template="#/components/schemas/{model}"
        )
    except Exception:
        return {}
    return schema


def openapi_document(
    title: str,
    version: str,
    endpoints: Sequence[tuple[Route, Callable[..., Any], RequestBody]],
    *,
    auth: bool,
    raw: Sequence[tuple[Route, Mapping[str, Any]]] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 description of a service's routes, as the gateway serves them.

    ``raw`` routes describe themselves: each gives its operations by
    lower-case method, whose ``$defs`` join the document's schemas.
    """
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for route, function, body in endpoints:
        request = body.model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(request.pop("$defs", {}))
        result = _return_schema(function, route)
        schemas.update(result.pop("$defs", {}))
        if route.streaming:
            content = {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "description": "one `data: <json>` event per value; `event: error` "
                    "carries an error and its error_id; `event: end` closes the stream",
                }
            }
        else:
            content = {"application/json": {"schema": result}}
        responses: dict[str, Any] = {"200": {"description": "The result.", "content": content}}
        for status, text in _ERRORS.items():
            if status == "401" and not auth:
                continue
            error = {"$ref": "#/components/schemas/Error"}
            responses[status] = {
                "description": text,
                "content": {"application/json": {"schema": error}},
            }
        doc = inspect.getdoc(function) or ""
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": doc.splitlines()[0] if doc else route.name,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": responses,
        }
        if doc:
            operation["description"] = doc
        if route.batch is not None:
            operation["x-cobalt-batch"] = {
                "max_size": route.batch.max_size,
                "max_wait_ms": route.batch.max_wait_ms,
            }
        paths[route.path] = {"post": operation}
    for route, operations in raw:
        described: dict[str, Any] = {}
        for method, given in operations.items():
            operation = copy.deepcopy(dict(given))
            schemas.update(operation.pop("$defs", {}))
            operation.setdefault("operationId", f"{route.name}_{method}")
            described[method] = operation
        paths[route.path] = described
    components: dict[str, Any] = {"schemas": schemas}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "servers": [{"url": f"/{title}"}],
        "paths": paths,
        "components": components,
    }
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
