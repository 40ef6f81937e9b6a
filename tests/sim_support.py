"""Run the simulator in process against a fake clock: time jumps from deadline to deadline."""

from __future__ import annotations

from datetime import datetime

from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.queries import pending_deadlines


class FakeClockPacer:
    """Moves the test's clock to `when`, firing every deadline due on the way at its due time, in order,
    as the timer runner would (deadlines that firing creates are fired too if they fall due before `when`)."""

    def __init__(self, container: Container, clock: FakeClock) -> None:
        self.container, self.clock = container, clock

    def now(self) -> datetime:
        return self.clock.now()

    def wait_until(self, when: datetime) -> None:
        while True:
            due = [(i, d) for i, d in pending_deadlines(self.container.db, when) if d >= self.clock.now()]
            overdue = [(i, d) for i, d in pending_deadlines(self.container.db, self.clock.now())]
            for deadline_id, _ in overdue:
                self.container.service.fire_deadline(deadline_id)
            if not due:
                break
            deadline_id, at = due[0]
            self.clock.advance(at - self.clock.now())
            self.container.service.fire_deadline(deadline_id)
        if when > self.clock.now():
            self.clock.advance(when - self.clock.now())
