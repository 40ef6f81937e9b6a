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
    timer_claim_batch: int = 200  # deadlines one sweep may claim, so several processes share a backlog
    ws_queue_limit: int = 1000  # events buffered per screen before it is cut off (1013)
    ws_heartbeat_seconds: float = 20.0
    page_limit_max: int = 500
    rate_per_token: float = 200.0  # requests/s per bearer token or API key (0: off)
    rate_per_ip: float = 1000.0  # requests/s per client address (0: off)
    ws_max_message_bytes: int = 65536  # a screen only sends its hello; anything bigger is refused
    access_log: bool = True  # one line per HTTP request from uvicorn (benchmarks turn it off)
    near_boundary_m: float = 200.0  # a report this close outside every grid goes to the nearest grid
    # Photos (issue 5): stored content-addressed on disk; `photo_dir` defaults to data_dir/photos.
    photo_dir: Path | None = None
    photo_max_bytes: int = 5_000_000  # one photo
    photo_max_count: int = 9  # per report
    photo_max_pixels: int = 40_000_000  # refuse decompression bombs before decoding
    photo_thumb_px: int = 320  # longest side of a thumbnail
    upload_max_bytes: int = 48_000_000  # a whole multipart report: 9 photos at their limit and the rest
    # Pages: an optional intranet tile server, e.g. http://tiles.local/{z}/{x}/{y}.png (empty = no base map).
    tile_url: str = ""
    tile_attribution: str = ""
    # Interoperability and operations (issue 8).
    webhook_max_attempts: int = 8  # then the delivery is dead-lettered (replay re-queues it)
    webhook_backoff_seconds: float = 5.0  # first retry delay; doubles per attempt
    webhook_backoff_max_seconds: float = 3600.0
    webhook_timeout_seconds: float = 10.0  # per HTTP attempt; a slow receiver only holds its own delivery
    webhook_poll_seconds: float = 1.0  # safety net besides the after-commit wake-up
    webhook_concurrency: int = 16  # attempts in flight per process
    webhook_lease_seconds: float = 120.0  # a claimed delivery is retried elsewhere if its worker dies
    # Egress allow-list for webhook URLs: comma-separated hosts, ".suffix" for a domain; empty = any host.
    webhook_allowed_hosts: str = ""
    log_json: bool = True  # structured JSON logs (dispatch/logs.py) from `griddispatch serve`

    @property
    def resolved_photo_dir(self) -> Path:
        return self.photo_dir or self.data_dir / "photos"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'griddispatch.sqlite3').resolve()}"
