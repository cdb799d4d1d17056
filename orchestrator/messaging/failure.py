"""Failures as data: what crosses the wire when a step does not succeed (never a pickle)."""

from __future__ import annotations

import msgspec


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """Why an attempt failed, as the worker (or a timer) reports it."""

    type: str
    """The error's type name, e.g. ``InsufficientFunds`` or ``StepTimeout``."""
    message: str
    retryable: bool
    """False for a business failure (``StepFailed``): the step fails at once."""

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool) -> Failure:
        return cls(
            type=type(exc).__name__, message=str(exc) or type(exc).__name__, retryable=retryable
        )
