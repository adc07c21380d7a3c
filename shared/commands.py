"""A service's commands, one row each: the route, and the rule that decides what to record.

A rule is a pure function ``rule(subject, meta, payload, <dependencies>) -> subject``. Its payload
model (the request body and the event it records) is read from its signature, and so are its
dependencies: each parameter after ``payload`` is named after a field of `Dependencies` and typed like
it, and the command endpoint passes exactly those, by name (as cosmicpython's bootstrap injects a
handler's dependencies). A rule that asks for something else, or types it otherwise, fails at import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from shared.access.policy import Action
from shared.contract.events import Payload
from shared.eventstore.aggregate import SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Protocol


@dataclass(frozen=True)
class Dependencies:
    """What a rule may ask for besides the subject, the event's metadata and the payload. Adding a
    kind of dependency is a field here and one line where the command endpoint provides it."""

    facts: SubjectFacts | None  # what this service learned from the other services' topics
    protocol: Protocol  # the thresholds and windows the rule checks against


# A rule: (the subject's stream or None, meta, payload, **dependencies) -> the stream with new events.
Rule = Callable[..., SubjectStream]


@dataclass(frozen=True)
class Command:
    route: str  # under /subjects/{subject_id}/, e.g. "adverse-events"
    rule: Rule
    action: Action  # what the policy calls it (shared/access/policy.py): who may send it, where
    summary: str
    payload: type[Payload] = field(init=False)
    needs: tuple[str, ...] = field(init=False)  # the Dependencies fields the rule takes

    def __post_init__(self) -> None:
        hints = get_type_hints(self.rule)
        params = list(inspect.signature(self.rule).parameters)
        if len(params) < 3:
            raise TypeError(f"{self.rule.__qualname__} must take (subject, meta, payload, ...dependencies)")
        payload = hints.get(params[2])
        if not (isinstance(payload, type) and issubclass(payload, Payload)):
            raise TypeError(f"{self.rule.__qualname__}: annotate `{params[2]}` with its payload model")
        provided = get_type_hints(Dependencies)
        for name in params[3:]:
            if name not in provided:
                raise TypeError(
                    f"{self.rule.__qualname__} asks for `{name}`; a rule may ask for: "
                    f"{', '.join(provided)} (shared.commands.Dependencies)"
                )
            if hints.get(name) != provided[name]:
                raise TypeError(f"{self.rule.__qualname__}: `{name}` is a {provided[name]}, not {hints.get(name)}")
        object.__setattr__(self, "payload", payload)
        object.__setattr__(self, "needs", tuple(params[3:]))

    def bind(self, dependencies: Dependencies) -> Callable[..., SubjectStream]:
        """The rule with its dependencies given: (subject, meta, payload) -> subject."""
        given: dict[str, Any] = {name: getattr(dependencies, name) for name in self.needs}

        def rule(subject: SubjectStream | None, meta: Any, payload: Payload) -> SubjectStream:
            return self.rule(subject, meta, payload, **given)

        return rule
