"""The live page at `/ui`: its files, and who the caller's key is.

The page's files (HTML, JS, CSS from `serve/ui/`, shipped in the package) need no key:
they hold nothing but code. Every data call the page makes carries the key it was given
(`Authorization: Bearer ...`, never in a URL), which the page keeps in `sessionStorage`.
A strict Content-Security-Policy lets the page load only its own files and talk only to
this origin: no inline script, no external network.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response

from runtime.models.enums import Scope
from runtime.models.records import ApiKey
from serve.auth import require
from serve.routes.keys import KeyView

router = APIRouter(tags=["ui"])

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
_DIR = resources.files("serve") / "ui"
_FILES = {  # name -> content type: the page's files, and nothing else, are served
    f.name: _TYPES[PurePath(f.name).suffix]
    for f in _DIR.iterdir()
    if PurePath(f.name).suffix in _TYPES
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str) -> Response:
    """One of the page's files, read from the package (cheap: a few small files)."""
    content_type = _FILES.get(name)
    if content_type is None:
        raise HTTPException(404, f"no file {name} in the page")
    body = (_DIR / name).read_bytes()
    return Response(body, media_type=content_type, headers=_HEADERS)


@router.get("/ui", include_in_schema=False)
async def page() -> Response:
    return _file("index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def page_file(name: Annotated[str, Path(max_length=40)]) -> Response:
    return _file(name)


@router.get("/api/v1/me", response_model=KeyView)
async def me(caller: Annotated[ApiKey, require(Scope.READ)]) -> KeyView:
    """The caller's own key (name, prefix, scopes, limits): what the page may offer."""
    return KeyView.of(caller)
