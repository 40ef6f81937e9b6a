"""Who may see and act on which case: role plus place in the jurisdiction tree. Pure."""

from __future__ import annotations

from dispatch.domain import Actor, Incident

COUNTY_WIDE_ROLES = frozenset({"county_dispatcher", "supervisor", "admin"})
# Other systems (hotline, 311 clients) read back only the cases they filed.
SYSTEM_CLIENT_ROLES = frozenset({"open311_client"})
# A wall screen's token reads its jurisdiction and changes nothing.
READ_ONLY_ROLES = frozenset({"screen"})


def can_see(actor: Actor, incident: Incident) -> bool:
    """A unit-bound user sees its subtree; department staff see cases dispatched to their department."""
    if actor.is_system:
        return True
    if actor.role == "department_staff":
        return any(d.department == actor.department for d in incident.departments)
    if actor.role in SYSTEM_CLIENT_ROLES:
        return incident.reporter_user == actor.username
    if actor.unit_code is None:
        return False
    if actor.role in COUNTY_WIDE_ROLES:
        return incident.county == actor.unit_code[:6]
    if incident.reporter_user == actor.username:
        return True
    return any(code == actor.unit_code for code in incident.jurisdiction)


def sees_jurisdiction(actor: Actor, code: str) -> bool:
    """May the actor look at everything under `code` (filters on lists and the event stream)?"""
    if actor.is_system or actor.role == "admin" and actor.unit_code is None:
        return True
    if actor.unit_code is None or actor.role in SYSTEM_CLIENT_ROLES:
        return False
    if actor.role in COUNTY_WIDE_ROLES:
        return code.startswith(actor.unit_code[:6])
    return code.startswith(actor.unit_code)
