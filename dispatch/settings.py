"""One settings class; every value can come from a `GRIDDISPATCH_` environment variable."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDDISPATCH_", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str | None = None  # default: sqlite file in data_dir
    host: str = "127.0.0.1"
    port: int = 8000
    clock_speed: float = 1.0
    demo: bool = True  # load the demo county (东湖区) into an empty database on first start
    jwt_secret: str | None = None  # default: generated once and kept in the database
    token_minutes: int = 12 * 60
    max_body_bytes: int = 1_000_000
    timer_sweep_seconds: float = 5.0  # safety net: how often the database is scanned for due deadlines
    ws_queue_limit: int = 1000  # events buffered per screen before it is cut off (1013)
    ws_heartbeat_seconds: float = 20.0
    page_limit_max: int = 500
    near_boundary_m: float = 200.0  # a report this close outside every grid goes to the nearest grid

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'griddispatch.sqlite3').resolve()}"
