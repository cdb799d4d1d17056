"""Failures as data: what crosses the wire when a step does not succeed (never a pickle).

`Failure` and the failure types Warren reports belong to the engine's vocabulary; the wire
format speaks them, so they are importable from here too.
"""

from __future__ import annotations

from orchestrator.engine.vocabulary import Failure, FailureType

__all__ = ["Failure", "FailureType"]
