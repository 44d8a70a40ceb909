"""The pages' routes under /ui, their static files, and the start page by role."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hub.web import board, it_messages, it_pages, sign_in, specialist, thumbnails
from hub.web.session import Person
from hub.web.templating import render

STATIC = Path(__file__).resolve().parent / "static"

# The first page of each role, in order of precedence for a person holding several.
START_PAGES = (
    ("specialist", "/ui/worklist"),
    ("case-manager", "/ui/board"),
    ("admin", "/ui/it/connectors"),
)

home = APIRouter(prefix="/ui", include_in_schema=False)


@home.get("/")
def start_page(person: Person) -> RedirectResponse:
    for role, target in START_PAGES:
        if person.has_role(role):
            return RedirectResponse(target, status_code=303)
    return RedirectResponse("/ui/no-pages", status_code=303)


@home.get("/no-pages")
def no_pages(request: Request, _person: Person) -> Response:
    return render(request, "no_pages.html")


def install_pages(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.include_router(sign_in.router)
    app.include_router(home)
    app.include_router(board.router)
    app.include_router(it_pages.router)
    app.include_router(it_messages.router)
    app.include_router(specialist.router)
    app.include_router(thumbnails.router)
