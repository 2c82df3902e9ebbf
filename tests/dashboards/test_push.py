"""`push` against a small local HTTP server that answers the Grafana API calls grafana-client
makes (frontend settings, folders, dashboards/db), with bearer-token auth as Grafana does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboards import DashboardsError
from dashboards.build import FOLDER_UID, build_all
from dashboards.push import push
from stormwatch.cli import main

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    url: str = ""
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    g = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            return

        def _reply(self, code: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _authorized(self) -> bool:
            g.calls.append((self.command, self.path))
            if self.headers.get("authorization") != f"Bearer {TOKEN}":
                self._reply(401, {"message": "Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path == "/api/frontend/settings":
                self._reply(200, {"buildInfo": {"version": "11.3.0", "commit": "x"}})
            elif self.path.startswith("/api/folders/"):
                uid = self.path.rsplit("/", 1)[1]
                if uid in g.folders:
                    self._reply(200, g.folders[uid])
                else:
                    self._reply(404, {"message": "folder not found"})
            else:
                self._reply(404, {"message": "Not found"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            if self.path == "/api/folders":
                if body["uid"] in g.folders:
                    self._reply(409, {"message": "a folder with the same uid already exists"})
                    return
                g.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
                self._reply(200, g.folders[body["uid"]])
            elif self.path == "/api/dashboards/db":
                d = body["dashboard"]
                if body.get("folderUid") not in g.folders:
                    self._reply(400, {"message": "folder not found"})
                    return
                if d["uid"] in g.dashboards and not body.get("overwrite"):
                    self._reply(412, {"status": "name-exists"})
                    return
                g.dashboards[d["uid"]] = body
                g.versions[d["uid"]] = g.versions.get(d["uid"], 0) + 1
                self._reply(
                    200,
                    {
                        "uid": d["uid"],
                        "status": "success",
                        "url": f"/d/{d['uid']}/x",
                        "version": g.versions[d["uid"]],
                    },
                )
            else:
                self._reply(404, {"message": "Not found"})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    g.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield g
    srv.shutdown()
    srv.server_close()


def test_push_creates_folder_once_and_overwrites_by_uid(grafana: FakeGrafana) -> None:
    boards = build_all("stormwatch")
    first = push(boards, grafana.url, TOKEN)
    second = push(boards, grafana.url, TOKEN)
    assert first.folder_created and not second.folder_created
    assert list(grafana.folders) == [FOLDER_UID]
    assert sorted(grafana.dashboards) == sorted(boards)
    assert all(v == 2 for v in grafana.versions.values())  # replaced, not duplicated
    assert [c for c in grafana.calls if c == ("POST", "/api/folders")] == [("POST", "/api/folders")]
    saved = grafana.dashboards["stormwatch-overview"]
    assert saved["overwrite"] is True and saved["folderUid"] == FOLDER_UID
    assert saved["dashboard"]["id"] is None


def test_push_with_wrong_token_says_so(grafana: FakeGrafana) -> None:
    with pytest.raises(DashboardsError, match="refused the token"):
        push(build_all("stormwatch"), grafana.url, "wrong")
    assert not grafana.dashboards


def test_push_to_wrong_url_says_it_cannot_reach(grafana: FakeGrafana) -> None:
    dead = grafana.url.rsplit(":", 1)[0] + ":1"
    with pytest.raises(DashboardsError, match="cannot reach Grafana"):
        push(build_all("stormwatch"), dead, TOKEN, timeout=2)


def test_cli_push_prints_what_it_uploaded(
    grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboards", "push", "--url", grafana.url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "created folder" in out and f"{grafana.url}/d/stormwatch-series/x" in out
    assert main(["dashboards", "push", "--url", grafana.url, "--token", "nope"]) == 2
    assert "refused the token" in capsys.readouterr().err
