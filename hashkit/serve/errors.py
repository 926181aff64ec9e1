"""Errors the service answers with a 4xx status and a one-line JSON message."""

from __future__ import annotations

from hashkit.errors import HashkitError


class RequestError(HashkitError):
    """A request the service refuses; ``status`` is its HTTP status code."""

    status = 400


class NotFound(RequestError):
    status = 404


class RequestTimeout(RequestError):
    """The request body stopped arriving."""

    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class Unauthorized(RequestError):
    status = 401


class Unprocessable(RequestError):
    """Well-formed but invalid: a value out of range, an unknown field."""

    status = 422
