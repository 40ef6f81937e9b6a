"""The ingest baseline: a bare FastAPI endpoint that parses the same report body (as our route does, a
pydantic body parameter) and answers 201 with a JSON body.

    uvicorn --factory bench.bare_app:create_app
"""

from __future__ import annotations

import itertools
from typing import Any

from fastapi import FastAPI

from api.schemas import ReportIn

_ids = itertools.count(1)


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/api/v1/reports", status_code=201)
    async def report(body: ReportIn) -> dict[str, Any]:
        return {"id": f"360102-bare-{next(_ids)}", **body.model_dump()}

    return app
