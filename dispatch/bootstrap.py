"""The one place where adapters are chosen and wired: database, clock, workflows, grids, service."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import shapely
from sqlalchemy import select

from dispatch import models as m
from dispatch.auth import hash_password
from dispatch.clock import Clock, SpeedClock, SystemClock, utc
from dispatch.db import Database
from dispatch.service import EVENT_SEQ, Committed, DispatchService
from dispatch.settings import Settings
from fixtures import demo_county
from grids.directory import DEFAULT_NEAR_BOUNDARY_M, JurisdictionTree
from grids.generations import active_generation, load_tree, set_active
from workflows.definition import load_all

Progress = Callable[[str], None]


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock
    service: DispatchService
    jwt_secret: str
    tree_holder: list[JurisdictionTree] = field(default_factory=list)
    categories: dict[str, str] = field(default_factory=dict)

    @property
    def tree(self) -> JurisdictionTree:
        return self.tree_holder[0]


def _meta(db: Database, key: str, make: Callable[[], str]) -> str:
    """Read a persisted setting, creating it once (first writer wins, even across processes)."""
    with db.write() as s:
        db.serialize(s, f"meta:{key}")
        row = s.get(m.Meta, key)
        if row is None:
            row = m.Meta(key=key, value=make())
            s.add(row)
        return row.value


def build(settings: Settings, clock: Clock | None = None, progress: Progress | None = None) -> Container:
    say = progress or (lambda _msg: None)
    db = Database(settings.resolved_database_url)
    db.migrate()
    if settings.demo:
        load_demo_if_empty(db, say)
    if clock is None:
        if settings.clock_speed != 1.0:
            anchor = datetime.fromisoformat(_meta(db, "clock_anchor", lambda: datetime.now(UTC).isoformat()))
            clock = SpeedClock(settings.clock_speed, anchor)
        else:
            clock = SystemClock()
    secret = settings.jwt_secret or _meta(db, "jwt_secret", lambda: secrets.token_urlsafe(32))
    holder: list[JurisdictionTree] = [load_active_tree(db, settings.near_boundary_m)]
    service = DispatchService(db, clock, load_all(), lambda: holder[0])
    with db.read() as s:
        categories = {c.code: c.name for c in s.execute(select(m.Category)).scalars()}
    return Container(settings, db, clock, service, secret, holder, categories)


def load_active_tree(db: Database, near_boundary_m: float = DEFAULT_NEAR_BOUNDARY_M) -> JurisdictionTree:
    generation = active_generation(db)
    if generation is None:
        return JurisdictionTree(0, [], near_boundary_m)
    return load_tree(db, generation, near_boundary_m)


# Two admins activating at once must not leave the database saying one set and memory routing by the other.
_activation = threading.Lock()


def activate_generation(container: Container, generation: int) -> JurisdictionTree:
    """Make a stored generation the routing truth: no report is ever routed against a half-built set.

    The new tree (index included) is built completely first; then, under one lock, the database flag moves in
    one transaction and the holder's slot is replaced in one assignment. A report being routed meanwhile uses
    either the old tree or the new one, whole.
    """
    tree = load_tree(container.db, generation, container.settings.near_boundary_m)
    with _activation:
        previous = container.tree_holder[0].generation
        with container.db.write() as s:
            set_active(s, generation)
            # Screens redraw their map on grids.activated (SPEC §5). Its seq comes from the one event counter,
            # in the same transaction as the flag, so it is ordered with every case event and never lost.
            seq = container.service._bump(s, EVENT_SEQ)
            s.add(
                m.Event(
                    seq=seq,
                    type="grids.activated",
                    at=container.clock.now(),
                    incident_id=None,
                    county=tree.counties[0] if tree.counties else "",
                    jurisdiction=list(tree.counties),
                    data={"generation": generation, "previous": previous, "grids": len(tree.index)},
                )
            )
        container.tree_holder[0] = tree
    container.service._announce(Committed(last_seq=seq))
    return tree


def load_demo_if_empty(db: Database, say: Progress) -> bool:
    """First start: generate 东湖区's grids and load them with departments, categories and demo users."""
    with db.read() as s:
        if s.execute(select(m.GridGeneration.id).limit(1)).first() is not None:
            return False
    from fixtures.subdivide import subdivide_county  # geometry work only when needed

    county = demo_county.DEMO_COUNTY
    say(f"generating the demo county {county} (东湖区): townships → communities → grids")
    units = subdivide_county(county)
    townships = [u for u in units if u.level == "township"]
    communities = [u for u in units if u.level == "community" and u.parent == townships[0].code]
    grids = [u for u in units if u.level == "grid" and u.parent == communities[0].code]
    now = datetime.now(UTC)
    say("hashing demo passwords")
    password_hash = hash_password(demo_county.DEMO_PASSWORD)
    with db.write() as s:
        db.serialize(s, "demo")  # processes starting together: one loads, the others then see it loaded
        if s.execute(select(m.GridGeneration.id).limit(1)).first() is not None:
            return False  # another process won the race
        gen = m.GridGeneration(county=county, created_at=now, active=True, note="demo county, generated")
        s.add(gen)
        s.flush()
        for u in units:
            s.add(
                m.Unit(
                    generation=gen.id,
                    code=u.code,
                    name=u.name,
                    level=u.level,
                    parent=u.parent,
                    geometry=shapely.to_wkb(u.geometry),
                )
            )
        for suffix, name in demo_county.DEPARTMENTS:
            s.add(m.Department(code=demo_county.department_code(county, suffix), name=name, county=county))
        for code, name, lead in demo_county.CATEGORIES:
            s.add(m.Category(code=code, name=name, lead_department=demo_county.department_code(county, lead)))
        for user in demo_county.demo_users(
            county, townships[0].code, communities[0].code, [g.code for g in grids]
        ):
            s.add(
                m.User(
                    username=user.username,
                    display_name=user.display_name,
                    password_hash=password_hash,
                    role=user.role,
                    unit_code=user.unit_code,
                    department=user.department,
                )
            )
        for roster in demo_county.demo_rosters(county, townships[0].code, communities[0].code):
            s.add(
                m.DutyRoster(
                    unit_code=roster.unit,
                    members=list(roster.members),
                    shift_hours=roster.shift_hours,
                    anchor=utc(roster.anchor),  # SQLite keeps no offset: store UTC
                    window_start=roster.window[0] if roster.window else None,
                    window_end=roster.window[1] if roster.window else None,
                )
            )
    say(f"demo county loaded: {len(units)} units, {sum(u.level == 'grid' for u in units)} grids")
    return True


def demo_logins(db: Database) -> list[tuple[str, str, str, str]]:
    """(username, role, bound unit or department, display name) for the start banner."""
    with db.read() as s:
        users = s.execute(select(m.User).order_by(m.User.role, m.User.username)).scalars().all()
    return [(u.username, u.role, u.unit_code or u.department or "", u.display_name) for u in users]
