"""One transitions machine per workflow definition, serving every incident.

The machine holds the graph; incidents are never attached to it. To fire an action we hand the machine a
short-lived `Subject` (the facts the conditions look at) and read back which declared transition fired.
`auto_transitions=False` keeps `to_<state>` shortcuts from bypassing the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from transitions import EventData, Machine, MachineError

from workflows.definition import TimeLimit, TransitionSpec, WorkflowDefinition


@dataclass
class Subject:
    """What a condition may look at. Built by the engine for one firing, then dropped."""

    state: str
    tier: str
    accepted: bool
    handled_state: str | None
    departments_done: bool
    rated: bool
    closed_at: datetime | None
    now: datetime
    reopen_window: TimeLimit
    pending_request: str | None = None  # "extension" | "suspend" while one awaits a decision
    previous_state: str | None = None  # where a suspended case resumes
    severity: str = "normal"
    fired: TransitionSpec | None = field(default=None)


Condition = Callable[[Subject], bool]

_SIMPLE: dict[str, Condition] = {
    "accepted": lambda s: s.accepted,
    "not_accepted": lambda s: not s.accepted,
    "all_departments_done": lambda s: s.departments_done,
    "not_all_departments_done": lambda s: not s.departments_done,
    "not_rated": lambda s: not s.rated,
    "within_reopen_window": lambda s: (
        s.closed_at is not None and s.now - s.closed_at <= s.reopen_window.as_timedelta()
    ),
    "no_pending_request": lambda s: s.pending_request is None,
    "severe": lambda s: s.severity in ("major", "critical"),
    "extension_requested": lambda s: s.pending_request == "extension",
    "suspend_requested": lambda s: s.pending_request == "suspend",
}

CONDITION_TEXT = {
    "accepted": "the case has not been accepted yet",
    "not_accepted": "the case is already accepted",
    "all_departments_done": "not every department has completed",
    "not_all_departments_done": "every department has completed",
    "not_rated": "the case is already rated",
    "within_reopen_window": "the reopen window has passed",
    "tier_is": "the case is at another tier",
    "handled_in": "the case was handled in another stage",
    "no_pending_request": "a request (延期 or 挂账) is already waiting for a decision",
    "severe": "only major or critical cases may skip tiers (越级上报)",
    "extension_requested": "no extension (延期) was requested",
    "suspend_requested": "no suspension (挂账) was requested",
    "previous_state": "the case was suspended from another stage",
}


def condition(name: str) -> Condition:
    base, _, arg = name.partition(":")
    if base == "tier_is":
        return lambda s: s.tier == arg
    if base == "handled_in":
        return lambda s: s.handled_state == arg
    if base == "previous_state":
        return lambda s: s.previous_state == arg
    return _SIMPLE[base]


def explain(name: str) -> str:
    """Why a failing condition refused an action, in words for the API's 409."""
    return CONDITION_TEXT[name.partition(":")[0]]


class WorkflowMachine:
    def __init__(self, definition: WorkflowDefinition) -> None:
        self.definition = definition
        self._machine = Machine(
            model=None,
            states=list(definition.states),
            transitions=[self._declare(t) for t in definition.transitions],
            initial=None,
            auto_transitions=False,
            send_event=True,
        )

    @staticmethod
    def _declare(spec: TransitionSpec) -> dict[str, object]:
        checks = [condition(c) for c in spec.conditions]

        def record(event: EventData) -> None:
            event.model.fired = spec

        return {
            "trigger": spec.trigger,
            "source": spec.source,
            "dest": spec.dest,
            "conditions": [lambda ev, c=c: c(ev.model) for c in checks],
            "after": record,
        }

    def fire(self, trigger: str, subject: Subject) -> TransitionSpec | None:
        """Run `trigger` on `subject`; the transition that fired, or None when every guard refused."""
        event = self._machine.events.get(trigger)
        if event is None:
            return None
        try:
            event.trigger(subject)
        except MachineError:
            return None
        return subject.fired

    def failing_conditions(self, trigger: str, subject: Subject) -> list[str]:
        """The conditions that stop `trigger` from the subject's state (for a clear refusal message)."""
        names: list[str] = []
        for spec in self.definition.transitions_for(trigger, subject.state):
            names.extend(c for c in spec.conditions if not condition(c)(subject))
        return names


SIDE_FLOW_ACTIONS = frozenset(
    {"request_extension", "approve_extension", "deny_extension", "request_suspend", "deny_suspend"}
)


def mermaid(definition: WorkflowDefinition) -> str:
    """The state graph as a Mermaid diagram (internal transitions are drawn as self-loops)."""
    lines = ["stateDiagram-v2"]
    for state in definition.states.values():
        lines.append(f"    {state.name}: {state.name} {state.zh}")
    drawn: set[tuple[str, str, str]] = set()
    for t in definition.transitions:
        if t.trigger in SIDE_FLOW_ACTIONS and t.dest is None:
            continue  # 延期/挂账 requests happen in every handling stage; one note says so instead of 40 loops
        shown = [] if t.trigger in ("approve_suspend", "resume") else list(t.conditions)
        label = t.trigger + (f" [{', '.join(shown)}]" if shown else "")
        key = (t.source, t.dest or t.source, label)
        if key not in drawn:
            drawn.add(key)
            lines.append(f"    {t.source} --> {t.dest or t.source}: {label}")
    for state in definition.states.values():
        if state.final:
            lines.append(f"    {state.name} --> [*]")
    return "\n".join(lines)
