"""Workflow definitions: plain data loaded from YAML and checked before anything runs on it.

A definition is versioned; an incident keeps the (name, version) it started with, so editing a file never
changes a running case. Nothing here does I/O beyond reading the definition files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

DEFINITIONS_DIR = Path(__file__).parent / "definitions"

ROLES = frozenset(
    {
        "grid_worker",
        "community_staff",
        "township_staff",
        "county_dispatcher",
        "department_staff",
        "supervisor",
        "admin",
        "system",
        "reporter",  # the user who submitted the report, whatever their role
    }
)
CLOCKS = ("ack", "resolve")
LOG_REASONS = frozenset(
    {
        "ack_timeout",
        "resolve_timeout",
        "manual",
        "severity",
        "rework",
        "dept_timeout",
        "dept_return",
        "supervise",
        "urge",
    }
)
NEEDS = frozenset({"note", "target", "departments", "rating"})
# Natural units count wall-clock time; working units count the county's working calendar (dispatch.workcal).
NATURAL_UNITS = {"minutes": 60, "hours": 3600}
UNITS = ("minutes", "hours", "work_hours", "work_days")
SIMPLE_CONDITIONS = frozenset(
    {
        "accepted",
        "not_accepted",
        "all_departments_done",
        "not_all_departments_done",
        "not_rated",
        "within_reopen_window",
        "no_pending_request",
        "severe",
        "extension_requested",
        "suspend_requested",
    }
)
PARAM_CONDITIONS = frozenset({"tier_is", "handled_in", "previous_state"})
SET_KEYS = frozenset({"tier", "accepted", "handled", "rework"})


class DefinitionError(ValueError):
    """A workflow file that cannot be run as written."""


@dataclass(frozen=True)
class TimeLimit:
    value: int
    unit: str

    @property
    def natural(self) -> bool:
        return self.unit in NATURAL_UNITS

    def as_timedelta(self) -> timedelta:
        """Only for natural units (reopen windows, repeat intervals)."""
        return timedelta(seconds=self.value * NATURAL_UNITS[self.unit])


@dataclass(frozen=True)
class LimitRule:
    limit: TimeLimit
    clock: str
    stage: str | None = None
    tier: str | None = None
    category: str | None = None
    severity: str | None = None

    def matches(self, *, clock: str, stage: str, tier: str, category: str, severity: str) -> bool:
        return (
            self.clock == clock
            and self.stage in (None, stage)
            and self.tier in (None, tier)
            and self.category in (None, category)
            and self.severity in (None, severity)
        )

    @property
    def specificity(self) -> int:
        return sum(x is not None for x in (self.stage, self.tier, self.category, self.severity))


@dataclass(frozen=True)
class StateSpec:
    name: str
    zh: str
    tier: str | None = None
    final: bool = False


@dataclass(frozen=True)
class TransitionSpec:
    trigger: str
    source: str
    dest: str | None  # None: internal, the state does not change
    roles: tuple[str, ...]
    conditions: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)
    log_reason: str | None = None


@dataclass(frozen=True)
class EntryRule:
    state: str
    tier: str
    log_reason: str | None = None
    alarm: bool = False


@dataclass(frozen=True)
class SideAction:
    name: str
    roles: tuple[str, ...]
    log_reason: str | None = None


@dataclass(frozen=True)
class WorkflowDefinition:
    name: str
    version: int
    title: str
    categories: tuple[str, ...]  # categories this workflow runs for; empty = the default workflow
    yellow_at: float
    extension_default: TimeLimit
    wait_for_shift: bool
    tiers: tuple[str, ...]
    states: dict[str, StateSpec]
    transitions: tuple[TransitionSpec, ...]
    entry_outside_grids: EntryRule
    entry_by_severity: dict[str, EntryRule]
    own_report_accepted: bool
    side_actions: dict[str, SideAction]
    time_limits: tuple[LimitRule, ...]
    county_supervise_every: TimeLimit
    reopen_window: TimeLimit

    @property
    def actions(self) -> list[str]:
        seen = dict.fromkeys(t.trigger for t in self.transitions)
        return [*seen, *self.side_actions]

    def transitions_for(self, trigger: str, source: str) -> list[TransitionSpec]:
        return [t for t in self.transitions if t.trigger == trigger and t.source == source]

    def is_final(self, state: str) -> bool:
        return self.states[state].final

    def tier_above(self, tier: str) -> str | None:
        i = self.tiers.index(tier)
        return self.tiers[i + 1] if i + 1 < len(self.tiers) else None

    def time_limit(
        self, *, clock: str, stage: str, tier: str, category: str, severity: str
    ) -> TimeLimit | None:
        best: LimitRule | None = None
        for rule in self.time_limits:
            matches = rule.matches(clock=clock, stage=stage, tier=tier, category=category, severity=severity)
            if matches and (best is None or rule.specificity >= best.specificity):
                best = rule
        return best.limit if best else None


def _limit(raw: dict[str, Any], where: str, natural_only: bool = False) -> TimeLimit:
    try:
        value, unit = int(raw["value"]), str(raw["unit"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: a time limit needs an integer value and a unit") from exc
    allowed = tuple(NATURAL_UNITS) if natural_only else UNITS
    if unit not in allowed:
        raise DefinitionError(f"{where}: unit {unit!r} is not one of {list(allowed)}")
    if value <= 0:
        raise DefinitionError(f"{where}: a time limit must be positive")
    return TimeLimit(value, unit)


def _check_condition(cond: str, states: dict[str, StateSpec], tiers: tuple[str, ...], where: str) -> None:
    name, _, arg = cond.partition(":")
    if name in SIMPLE_CONDITIONS and not arg:
        return
    if name == "tier_is" and arg in tiers:
        return
    if name in ("handled_in", "previous_state") and arg in states:
        return
    raise DefinitionError(f"{where}: unknown condition {cond!r}")


def _transition(
    raw: dict[str, Any], states: dict[str, StateSpec], tiers: tuple[str, ...], i: int
) -> TransitionSpec:
    where = f"transition #{i} ({raw.get('trigger')})"
    spec = TransitionSpec(
        trigger=str(raw["trigger"]),
        source=str(raw["source"]),
        dest=raw.get("dest"),
        roles=tuple(raw.get("roles", ())),
        conditions=tuple(raw.get("conditions", ())),
        needs=tuple(raw.get("needs", ())),
        set=dict(raw.get("set", {})),
        log_reason=raw.get("log_reason"),
    )
    for state in (spec.source, spec.dest):
        if state is not None and state not in states:
            raise DefinitionError(f"{where}: unknown state {state!r}")
    if not spec.roles or not set(spec.roles) <= ROLES:
        raise DefinitionError(f"{where}: roles must be a non-empty subset of {sorted(ROLES)}")
    if not set(spec.needs) <= NEEDS:
        raise DefinitionError(f"{where}: needs must be a subset of {sorted(NEEDS)}")
    if not set(spec.set) <= SET_KEYS:
        raise DefinitionError(f"{where}: set keys must be a subset of {sorted(SET_KEYS)}")
    tier = spec.set.get("tier")
    if tier is not None and tier != "handled" and tier not in tiers:
        raise DefinitionError(f"{where}: unknown tier {tier!r}")
    if spec.log_reason is not None and spec.log_reason not in LOG_REASONS:
        raise DefinitionError(f"{where}: unknown log reason {spec.log_reason!r}")
    for cond in spec.conditions:
        _check_condition(cond, states, tiers, where)
    return spec


def expand_side_flows(
    raw: dict[str, Any], states: dict[str, StateSpec], tiers: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Extension (延期) and suspension (挂账) transitions for every handling state and tier, from the compact
    `side_flows` table: the handler at a tier asks, the tier above decides."""
    spec = raw.get("side_flows")
    if not spec:
        return []
    handlers: dict[str, list[str]] = {t: list(r) for t, r in spec["handlers"].items()}
    approvers: dict[str, list[str]] = {t: list(r) for t, r in spec["approvers"].items()}
    extra = {s: list(r) for s, r in spec.get("extra_handlers", {}).items()}
    out: list[dict[str, Any]] = []
    for state in spec["states"]:
        if state not in states:
            raise DefinitionError(f"side_flows: unknown state {state!r}")
        fixed = states[state].tier
        for tier in [fixed] if fixed else list(spec.get("free_tiers", tiers)):
            asks = handlers.get(tier, []) + extra.get(state, [])
            decides = approvers.get(tier, [])
            at = [f"tier_is:{tier}"]
            out += [
                {
                    "trigger": "request_extension",
                    "source": state,
                    "roles": asks,
                    "conditions": [*at, "no_pending_request"],
                    "needs": ["note"],
                },
                {
                    "trigger": "approve_extension",
                    "source": state,
                    "roles": decides,
                    "conditions": [*at, "extension_requested"],
                },
                {
                    "trigger": "deny_extension",
                    "source": state,
                    "roles": decides,
                    "conditions": [*at, "extension_requested"],
                    "needs": ["note"],
                },
                {
                    "trigger": "request_suspend",
                    "source": state,
                    "roles": asks,
                    "conditions": [*at, "no_pending_request"],
                    "needs": ["note"],
                },
                {
                    "trigger": "approve_suspend",
                    "source": state,
                    "dest": "suspended",
                    "roles": decides,
                    "conditions": [*at, "suspend_requested"],
                },
                {
                    "trigger": "deny_suspend",
                    "source": state,
                    "roles": decides,
                    "conditions": [*at, "suspend_requested"],
                    "needs": ["note"],
                },
            ]
        resumers = sorted({r for t in tiers for r in handlers.get(t, []) + approvers.get(t, [])})
        out.append(
            {
                "trigger": "resume",
                "source": "suspended",
                "dest": state,
                "roles": resumers,
                "conditions": [f"previous_state:{state}"],
            }
        )
    return out


def _check_structure(d: WorkflowDefinition) -> None:
    """Unreachable states, dead ends and stages without limits are mistakes in a definition."""
    entries = {r.state for r in d.entry_by_severity.values()} | {d.entry_outside_grids.state}
    reachable, frontier = set(entries), list(entries)
    while frontier:
        here = frontier.pop()
        for t in d.transitions:
            if t.source == here and t.dest and t.dest not in reachable:
                reachable.add(t.dest)
                frontier.append(t.dest)
    unreachable = sorted(set(d.states) - reachable)
    if unreachable:
        raise DefinitionError(f"unreachable states: {', '.join(unreachable)}")
    for name, state in d.states.items():
        if state.final:
            continue
        if not any(t.source == name and t.dest and t.dest != name for t in d.transitions):
            raise DefinitionError(
                f"state {name!r} is a dead end: no transition leaves it and it is not final"
            )
        if name == "suspended":
            continue
        if not any(r.clock == "resolve" and r.stage in (None, name) for r in d.time_limits):
            raise DefinitionError(f"state {name!r} has no resolve time limit")


def parse_definition(raw: dict[str, Any]) -> WorkflowDefinition:
    tiers = tuple(raw["tiers"])
    states = {
        s["name"]: StateSpec(s["name"], s["zh"], s.get("tier"), bool(s.get("final", False)))
        for s in raw["states"]
    }
    raw_transitions = list(raw["transitions"]) + expand_side_flows(raw, states, tiers)
    transitions = tuple(_transition(t, states, tiers, i) for i, t in enumerate(raw_transitions))

    def entry(r: dict[str, Any], where: str) -> EntryRule:
        rule = EntryRule(r["state"], r["tier"], r.get("log_reason"), bool(r.get("alarm", False)))
        if rule.state not in states or rule.tier not in tiers:
            raise DefinitionError(f"entry {where}: unknown state or tier")
        return rule

    side_actions = {
        name: SideAction(name, tuple(v["roles"]), v.get("log_reason"))
        for name, v in raw.get("side_actions", {}).items()
    }
    for side in side_actions.values():
        if not set(side.roles) <= ROLES:
            raise DefinitionError(f"side action {side.name}: roles must be a subset of {sorted(ROLES)}")
    limits = []
    for i, r in enumerate(raw.get("time_limits", [])):
        if r.get("clock") not in CLOCKS:
            raise DefinitionError(f"time limit #{i}: clock must be one of {CLOCKS}")
        if r.get("stage") is not None and r["stage"] not in states:
            raise DefinitionError(f"time limit #{i}: unknown stage {r['stage']!r}")
        limits.append(
            LimitRule(
                _limit(r, f"time limit #{i}"),
                r["clock"],
                r.get("stage"),
                r.get("tier"),
                r.get("category"),
                r.get("severity"),
            )
        )
    yellow_at = float(raw.get("lights", {}).get("yellow_at", 0.8))
    if not 0 < yellow_at < 1:
        raise DefinitionError("lights.yellow_at must be between 0 and 1")
    entry_raw = raw["entry"]
    definition = WorkflowDefinition(
        name=str(raw["name"]),
        version=int(raw["version"]),
        title=str(raw.get("title", raw["name"])),
        categories=tuple(raw.get("categories", ())),
        yellow_at=yellow_at,
        extension_default=_limit(
            raw.get("extension_default", {"value": 1, "unit": "work_days"}), "extension_default"
        ),
        wait_for_shift=bool(raw.get("duty", {}).get("wait_for_shift", False)),
        tiers=tiers,
        states=states,
        transitions=transitions,
        entry_outside_grids=entry(entry_raw["outside_grids"], "outside_grids"),
        entry_by_severity={k: entry(v, k) for k, v in entry_raw["by_severity"].items()},
        own_report_accepted=bool(entry_raw.get("own_report_accepted", False)),
        side_actions=side_actions,
        time_limits=tuple(limits),
        county_supervise_every=_limit(
            raw["county_overdue"]["repeat_supervise_every"], "county_overdue", natural_only=True
        ),
        reopen_window=_limit(raw["reopen_window"], "reopen_window", natural_only=True),
    )
    _check_structure(definition)
    return definition


def load_definition(path: Path) -> WorkflowDefinition:
    with path.open(encoding="utf-8") as fh:
        return parse_definition(yaml.safe_load(fh))


def load_all(directory: Path = DEFINITIONS_DIR) -> dict[tuple[str, int], WorkflowDefinition]:
    """Every definition on disk keyed by (name, version)."""
    found: dict[tuple[str, int], WorkflowDefinition] = {}
    for path in sorted(directory.glob("*.yaml")):
        d = load_definition(path)
        if (d.name, d.version) in found:
            raise DefinitionError(f"{path.name}: duplicate definition {d.name} v{d.version}")
        found[(d.name, d.version)] = d
    return found
