"""A small project board (FastAPI) that lets roomcast carry its live updates.

The board keeps its own login (a signed session cookie, no JWT anywhere) and answers
roomcast's hooks: `connect` admits a WebSocket by that cookie, `rpc` answers the custom
command `request_metrics`, and `/roomcast/events` marks users online and offline. It
moves users into project rooms and publishes task events with the server API
(`roomcast.api.AsyncClient`). Start it with `python -m examples.board` (see README.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from roomcast.api import AsyncClient

COOKIE = "board_session"
USER_ID = re.compile(r"[a-z0-9_-]{1,32}")
COLUMNS = ("todo", "doing", "done")
PAGE = Path(__file__).with_name("index.html")


@dataclass(frozen=True)
class Config:
    """Where roomcast is and the secrets the board shares with it (or keeps to itself)."""

    roomcast_http: str  # roomcast's HTTP port: the server API
    roomcast_ws: str  # roomcast's WebSocket URL, for the page
    api_key: str  # roomcast's --api-key
    hook_secret: str  # roomcast's --hook-secret: signs every hook and event
    session_secret: str  # the board's own: signs its session cookies

    @classmethod
    def from_env(cls) -> Config:
        """Read BOARD_* variables; name the missing ones and how to start the board."""
        names = {"roomcast_http": "BOARD_ROOMCAST_HTTP", "roomcast_ws": "BOARD_ROOMCAST_WS",
                 "api_key": "BOARD_API_KEY", "hook_secret": "BOARD_HOOK_SECRET",
                 "session_secret": "BOARD_SESSION_SECRET"}
        missing = [env for env in names.values() if not os.environ.get(env)]
        if missing:
            raise RuntimeError(f"set {', '.join(missing)}, or start the board and roomcast "
                               "together with `python -m examples.board`")
        return cls(**{key: os.environ[env] for key, env in names.items()})


# ------------------------------------------------------------------ the board's data
@dataclass
class Project:
    id: int
    name: str
    members: set[str] = field(default_factory=set)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def room(self) -> str:
        return f"project:{self.id}"


@dataclass
class Board:
    """Everything in memory: projects, their tasks, who is online (from roomcast's events)."""

    projects: dict[int, Project] = field(default_factory=dict)
    online: set[str] = field(default_factory=set)
    seen_events: set[str] = field(default_factory=set)
    next_task: int = 1

    def of_user(self, user: str) -> list[Project]:
        return [p for p in self.projects.values() if user in p.members]

    def project(self, project_id: int, user: str) -> Project:
        project = self.projects.get(project_id)
        if project is None or user not in project.members:
            raise HTTPException(404, f"no project {project_id} of yours")
        return project

    def view(self, project: Project) -> dict[str, Any]:
        return {"id": project.id, "name": project.name, "room": project.room,
                "members": sorted(project.members),
                "online": sorted(project.members & self.online),
                "tasks": list(project.tasks.values())}

    def metrics(self, user: str) -> dict[str, Any]:
        """What `request_metrics` answers: the user's projects and their tasks per column."""
        projects = self.of_user(user)
        per_column = dict.fromkeys(COLUMNS, 0)
        for project in projects:
            for task in project.tasks.values():
                per_column[task["column"]] += 1
        return {"projects": len(projects), "tasks": per_column,
                "online": sorted({m for p in projects for m in p.members} & self.online)}


class NewProject(BaseModel):
    name: str


class NewMember(BaseModel):
    user_id: str


class NewTask(BaseModel):
    title: str


class Move(BaseModel):
    column: str


# ------------------------------------------------------------------ signatures
def sign(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def from_roomcast(config: Config, body: bytes, header: str | None) -> bool:
    """True when X-Roomcast-Signature is the HMAC-SHA256 of these exact bytes."""
    expected = "sha256=" + sign(config.hook_secret, body)
    return header is not None and hmac.compare_digest(header, expected)


def session_value(config: Config, user: str) -> str:
    return f"{user}.{sign(config.session_secret, user.encode())}"


def session_user(config: Config, cookie_header: str) -> str | None:
    """The user a Cookie header's board session names, or None when absent or forged."""
    try:
        morsel = SimpleCookie(cookie_header).get(COOKIE)
    except CookieError:
        return None
    if morsel is None:
        return None
    user, _, signature = morsel.value.rpartition(".")
    if not USER_ID.fullmatch(user):
        return None
    return user if hmac.compare_digest(signature, sign(config.session_secret,
                                                       user.encode())) else None


def create_app(config: Config) -> FastAPI:
    """The board, talking to the roomcast that `config` names."""
    board = Board()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncClient(config.roomcast_http, api_key=config.api_key) as api:
            app.state.roomcast = api
            yield

    app = FastAPI(title="board", lifespan=lifespan)
    app.state.board = board
    add_pages(app, config, board)
    add_projects(app, config, board)
    add_hooks(app, config, board)
    return app


def user_of(config: Config, request: Request) -> str:
    """The logged-in user of a request to the board, or 401 saying how to log in."""
    user = session_user(config, request.headers.get("cookie", ""))
    if user is None:
        raise HTTPException(401, "log in first: GET /login?user=NAME")
    return user


def roomcast_api(request: Request) -> AsyncClient:
    """The app's one server-API client (opened and closed by the lifespan)."""
    client: AsyncClient = request.app.state.roomcast
    return client


def add_pages(app: FastAPI, config: Config, board: Board) -> None:
    """Login, logout, the page, and what the page shows."""

    @app.get("/login")
    async def login(user: str) -> Response:
        """Log in as `user` (no password: it is an example) with a signed session cookie."""
        if not USER_ID.fullmatch(user):
            raise HTTPException(400, "a user name is 1-32 of a-z, 0-9, _ and -")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_value(config, user), httponly=True,
                            samesite="lax")
        return response

    @app.get("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text().replace("{{ROOMCAST_WS}}", config.roomcast_ws)

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        user = user_of(config, request)
        return {"user_id": user, "projects": [board.view(p) for p in board.of_user(user)]}


def add_projects(app: FastAPI, config: Config, board: Board) -> None:
    """Projects, members and tasks; every change goes to roomcast's server API."""

    @app.post("/projects")
    async def create_project(body: NewProject, request: Request) -> dict[str, Any]:
        """A new project; its creator is its first member (and is moved into its room)."""
        user = user_of(config, request)
        project = Project(len(board.projects) + 1, body.name)
        board.projects[project.id] = project
        await add_member(request, project, user)
        return board.view(project)

    @app.post("/projects/{project_id}/members")
    async def add(project_id: int, body: NewMember, request: Request) -> dict[str, Any]:
        project = board.project(project_id, user_of(config, request))
        if not USER_ID.fullmatch(body.user_id):
            raise HTTPException(400, "a user name is 1-32 of a-z, 0-9, _ and -")
        live = await add_member(request, project, body.user_id)
        return {**board.view(project), "live_connections": live}

    async def add_member(request: Request, project: Project, user: str) -> int:
        """Record the membership, then subscribe the user's live connections server-side
        (§12); connections opened later get the room from the connect hook."""
        project.members.add(user)
        return await roomcast_api(request).subscribe(user, project.room)

    @app.post("/projects/{project_id}/tasks")
    async def create_task(project_id: int, body: NewTask, request: Request) -> dict[str, Any]:
        user = user_of(config, request)
        project = board.project(project_id, user)
        task_id, board.next_task = board.next_task, board.next_task + 1
        task: dict[str, Any] = {"id": task_id, "title": body.title, "column": "todo",
                                "by": user}
        project.tasks[task_id] = task
        await roomcast_api(request).publish(project.room, task, event="task.created",
                                            idempotency_key=f"task-created-{task_id}")
        return task

    @app.post("/projects/{project_id}/tasks/{task_id}/move")
    async def move_task(project_id: int, task_id: int, body: Move,
                        request: Request) -> dict[str, Any]:
        user = user_of(config, request)
        project = board.project(project_id, user)
        task = project.tasks.get(task_id)
        if task is None:
            raise HTTPException(404, f"no task {task_id} in project {project_id}")
        if body.column not in COLUMNS:
            raise HTTPException(400, f"column is one of {', '.join(COLUMNS)}")
        moved_from, task["column"] = task["column"], body.column
        moved = {**task, "from": moved_from, "by": user}
        await roomcast_api(request).publish(project.room, moved, event="task.moved")
        return task


def add_hooks(app: FastAPI, config: Config, board: Board) -> None:
    """The endpoints roomcast calls: connect and rpc hooks (§11), events (§13)."""

    async def signed_json(request: Request) -> dict[str, Any] | None:
        body = await request.body()
        if not from_roomcast(config, body, request.headers.get("x-roomcast-signature")):
            return None
        decoded: dict[str, Any] = await request.json()
        return decoded

    @app.post("/roomcast/connect")
    async def connect_hook(request: Request) -> dict[str, Any]:
        """Admit a WebSocket by the board's session cookie, into the user's project rooms."""
        hook = await signed_json(request)
        if hook is None:
            return {"error": {"code": 4403, "message": "not from roomcast"}}
        user = session_user(config, hook.get("headers", {}).get("cookie", ""))
        if user is None:
            return {"error": {"code": 4401, "message": "log in to the board first"}}
        rooms = [p.room for p in board.of_user(user)]
        return {"result": {"user_id": user, "rooms": rooms, "publish": [],
                           "info": {"name": user}, "subscribe": rooms}}

    @app.post("/roomcast/rpc")
    async def rpc_hook(request: Request) -> Response:
        """Answer the board's own command types; 404 makes roomcast say unknown_type."""
        hook = await signed_json(request)
        if hook is None:
            return JSONResponse({"error": {"code": "forbidden", "message": "not from roomcast"}})
        if hook.get("type") != "request_metrics":
            return JSONResponse({}, status_code=404)
        return JSONResponse({"result": {"data": board.metrics(hook["user_id"])}})

    @app.post("/roomcast/events")
    async def events(request: Request) -> Response:
        """user_online / user_offline mark users; each change is published into the
        user's projects as user.online / user.offline. Repeats (same id) are dropped."""
        event = await signed_json(request)
        if event is None:
            return JSONResponse({"error": "not from roomcast"}, status_code=403)
        kind, user = event.get("event"), str(event.get("user_id"))
        if event.get("id") in board.seen_events or kind not in ("user_online", "user_offline"):
            return JSONResponse({})
        if kind == "user_online":
            board.online.add(user)
        else:
            board.online.discard(user)
        name = "user.online" if kind == "user_online" else "user.offline"
        for project in board.of_user(user):
            key = f"{name}-{event['id']}-{project.id}"  # a retried event publishes once
            await roomcast_api(request).publish(project.room, {"user_id": user}, event=name,
                                                idempotency_key=key)
        board.seen_events.add(event["id"])  # only now: a failed publish is tried again
        return JSONResponse({})


def app_from_env() -> FastAPI:
    """The uvicorn factory: `uvicorn --factory examples.board.app:app_from_env`."""
    return create_app(Config.from_env())
