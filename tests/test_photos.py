"""Photos: the store (content addressing, type from the bytes, size and pixel limits, thumbnails) and the HTTP
side (multipart reports, 413/422 refusals that store nothing, photos served only to who may see the case)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from dispatch.bootstrap import Container
from dispatch.domain import Refusal
from dispatch.photos import PhotoStore, sniff
from tests.conftest import Demo


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (800, 600), color: str = "orange") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def noisy_png(side: int) -> bytes:
    """Noise does not compress: a PNG about 3 bytes per pixel."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


# ---------------------------------------------------------------- the store


@pytest.fixture
def store(tmp_path: Path) -> PhotoStore:
    return PhotoStore(tmp_path / "photos", max_bytes=2_000_000, max_pixels=10_000_000, thumb_px=320)


@pytest.mark.parametrize(("fmt", "kind"), [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")])
def test_each_allowed_type_is_recognised_from_its_bytes(store: PhotoStore, fmt: str, kind: str) -> None:
    data = image_bytes(fmt)
    assert sniff(data) == kind
    stored = store.put(data, f"x.{kind}")
    assert (stored.kind, stored.width, stored.height) == (kind, 800, 600)
    path, media_type = store.open(stored.id) or (None, None)
    assert path is not None and path.read_bytes() == data and media_type == f"image/{kind}"


def test_same_bytes_are_stored_once_under_their_hash(store: PhotoStore) -> None:
    data = image_bytes()
    a, b = store.put(data), store.put(data)
    assert a.id == b.id and len(a.id) == 64
    assert len([p for p in (store.root / "original").rglob("*") if p.is_file()]) == 1


def test_thumbnail_is_a_small_jpeg_without_metadata(store: PhotoStore) -> None:
    stored = store.put(image_bytes("PNG", (1600, 400)))
    path, media_type = store.open(stored.id, thumb=True) or (None, None)
    assert media_type == "image/jpeg" and path is not None
    with Image.open(path) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == 320 and thumb.size == (320, 80)
        assert not thumb.getexif()


@pytest.mark.parametrize(
    "data",
    [
        b"%PDF-1.7 not a picture",
        b"GIF89a" + b"\x00" * 100,
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"\xff\xd8\xff" + b"garbage that only starts like a JPEG" * 10,
        b"",
    ],
)
def test_anything_else_is_refused_with_422(store: PhotoStore, data: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        store.put(data, "evil.jpg")
    assert refused.value.status == 422 and refused.value.code == "photo_type"
    assert not (store.root / "original").exists()


def test_too_large_is_413_and_too_many_pixels_is_422(store: PhotoStore) -> None:
    big = PhotoStore(store.root, max_bytes=1000, max_pixels=10_000_000, thumb_px=320)
    with pytest.raises(Refusal) as refused:
        big.put(image_bytes())
    assert refused.value.status == 413 and refused.value.code == "photo_too_large"
    small = PhotoStore(store.root, max_bytes=2_000_000, max_pixels=1000, thumb_px=320)
    with pytest.raises(Refusal) as refused:
        small.put(image_bytes("PNG", (100, 100)))
    assert refused.value.status == 422 and refused.value.code == "photo_dimensions"


def test_ids_that_are_not_hashes_never_reach_the_disk(store: PhotoStore) -> None:
    assert store.open("../../etc/passwd") is None
    assert store.open("a" * 64) is None


# ---------------------------------------------------------------- over HTTP


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as c:
        yield c


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def report_json(demo: Demo, **kw: Any) -> dict[str, Any]:
    lon, lat = demo.point_in(demo.grid)
    return {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾满溢", **kw}


def count_cases(client: TestClient) -> int:
    return len(client.get("/api/v1/incidents?limit=500", headers=login(client, "dispatcher")).json()["items"])


def test_multipart_report_with_photos_and_who_may_see_them(client: TestClient, demo: Demo) -> None:
    jpeg, png = image_bytes("JPEG"), image_bytes("PNG", color="blue")
    r = client.post(
        "/api/v1/reports",
        headers=login(client, "grid"),
        data={"report": json.dumps(report_json(demo))},
        files=[("photos", ("a.jpg", jpeg, "image/jpeg")), ("photos", ("b.png", png, "image/png"))],
    )
    assert r.status_code == 201, r.text
    view = r.json()
    assert len(view["photos"]) == 2 and view["grid"]["code"] == demo.grid
    iid, first = view["id"], view["photos"][0]

    for user in ("grid", "supervisor", "dispatcher", "community"):
        got = client.get(f"/api/v1/incidents/{iid}/photos/{first}", headers=login(client, user))
        assert got.status_code == 200 and got.content == jpeg and got.headers["content-type"] == "image/jpeg"
    thumb = client.get(f"/api/v1/incidents/{iid}/photos/{first}?size=thumb", headers=login(client, "grid"))
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 320

    # Not this user's case (another grid, a department it was never dispatched to): 404, nothing revealed.
    for user in ("grid2", "dept_urban"):
        denied = client.get(f"/api/v1/incidents/{iid}/photos/{first}", headers=login(client, user))
        assert denied.status_code == 404 and denied.json()["code"] == "not_found"
    assert client.get(f"/api/v1/incidents/{iid}/photos/{first}").status_code == 401
    # A photo id that exists, asked for through a case that does not hold it: 404 as well.
    other = client.post("/api/v1/reports", headers=login(client, "grid"), json=report_json(demo)).json()["id"]
    assert (
        client.get(f"/api/v1/incidents/{other}/photos/{first}", headers=login(client, "grid")).status_code
        == 404
    )


def test_multipart_with_flat_fields(client: TestClient, demo: Demo) -> None:
    fields = {k: str(v) for k, v in report_json(demo).items()} | {
        "reporter_name": "王五",
        "reporter_phone": "13812341234",
    }
    r = client.post(
        "/api/v1/reports",
        headers=login(client, "dispatcher"),
        data=fields,
        files=[("photos", ("a.webp", image_bytes("WEBP"), "image/webp"))],
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["photos"]) == 1 and r.json()["reporter"]["name"] == "王五"


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ([("photos", ("x.jpg", b"MZ\x90\x00 an exe named like a photo", "image/jpeg"))], 422, "photo_type"),
        ([("photos", ("x.gif", b"GIF89a" + b"\x00" * 64, "image/gif"))], 422, "photo_type"),
        (
            [("photos", (f"{i}.jpg", image_bytes("JPEG", (20, 20)), "image/jpeg")) for i in range(10)],
            422,
            None,
        ),
        ([("photos", ("big.png", noisy_png(200), "image/png"))], 413, "photo_too_large"),
    ],
)
def test_bad_photos_are_refused_and_no_case_is_opened(
    client: TestClient, container: Container, demo: Demo, files: list[Any], status: int, code: str | None
) -> None:
    container.settings.photo_max_bytes = 50_000  # the noisy PNG (~120 kB) is larger; small JPEGs are not
    before = count_cases(client)
    r = client.post(
        "/api/v1/reports",
        headers=login(client, "grid"),
        data={"report": json.dumps(report_json(demo))},
        files=files,
    )
    assert r.status_code == status, r.text
    assert r.json()["detail"] and (code is None or r.json()["code"] == code)
    assert count_cases(client) == before


def test_the_report_part_is_validated_like_the_json_body(client: TestClient, demo: Demo) -> None:
    for bad, field in (
        ({"lon": 181}, "lon"),
        ({"unexpected": 1}, "unexpected"),
        ({"description": " "}, "description"),
    ):
        r = client.post(
            "/api/v1/reports",
            headers=login(client, "grid"),
            data={"report": json.dumps(report_json(demo, **bad))},
            files=[("photos", ("a.jpg", image_bytes(), "image/jpeg"))],
        )
        assert r.status_code == 422 and r.json()["code"] == "validation_error"
        assert [e["field"] for e in r.json()["detail"]] == [field]
    r = client.post("/api/v1/reports", headers=login(client, "grid"), data={"report": "{not json"}, files=[])
    assert r.status_code == 422


def test_json_reports_are_as_strict_as_before(client: TestClient, demo: Demo) -> None:
    h = login(client, "grid")
    assert client.post("/api/v1/reports", headers=h, json=report_json(demo)).status_code == 201
    bad = client.post("/api/v1/reports", headers=h, json=report_json(demo, extra=1))
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "extra"
    broken = client.post(
        "/api/v1/reports", headers={**h, "content-type": "application/json"}, content=b"{nope"
    )
    assert broken.status_code == 422 and broken.json()["code"] == "validation_error"
    text = client.post("/api/v1/reports", headers={**h, "content-type": "text/plain"}, content=b"hi")
    assert text.status_code == 422
    # The JSON limit stays at max_body_bytes even though multipart reports may be larger.
    huge = client.post("/api/v1/reports", headers=h, json=report_json(demo, description="垃" * 600_000))
    assert huge.status_code == 413 and huge.json()["code"] == "too_large"
