"""Upload the dashboards to a running Grafana over its HTTP API (grafana-client).

Idempotent: the folder is looked up by its uid and created only when missing; every dashboard
is saved with its fixed uid and `overwrite: true`, so a second push replaces the first.
Errors say which of URL, token or permission is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dashboards import DashboardsError
from dashboards.build import FOLDER_TITLE, FOLDER_UID


@dataclass(frozen=True)
class Pushed:
    folder_created: bool
    dashboards: list[tuple[str, str]]  # (uid, url path Grafana reports)


def _client(url: str, token: str, timeout: float) -> Any:
    from grafana_client import GrafanaApi

    try:
        return GrafanaApi.from_url(url, credential=token or None, timeout=timeout)
    except (ValueError, TypeError) as e:
        raise DashboardsError(f"bad Grafana URL {url!r}: {e}") from e


def _explain(e: Exception, url: str, doing: str) -> DashboardsError:
    from grafana_client.client import GrafanaException

    if isinstance(e, GrafanaException):
        code = e.status_code
        if code == 401:
            return DashboardsError(f"Grafana at {url} refused the token (401) while {doing}: "
                                   "check --token (a service account token)")  # fmt: skip
        if code == 403:
            return DashboardsError(f"the token may not do this (403) while {doing}: give the "
                                   "service account the Editor role")  # fmt: skip
        return DashboardsError(f"Grafana at {url} answered {code or 'an error'} while {doing}: "
                               f"{e.message}")  # fmt: skip
    reason = str(e).split(" (Caused by")[0][:300]
    return DashboardsError(f"cannot reach Grafana at {url} while {doing}: {reason}")


def push(dashboards: dict[str, dict[str, Any]], url: str, token: str, *,
         timeout: float = 10.0) -> Pushed:  # fmt: skip
    """Create the Stormwatch folder if needed and save every dashboard into it."""
    import niquests
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = _client(url, token, timeout)
    errors = (GrafanaException, niquests.exceptions.RequestException, ValueError)
    try:
        info = api.health.check()
    except errors as e:
        raise _explain(e, url, "checking its health") from e
    if not isinstance(info, dict) or "version" not in info:
        raise DashboardsError(f"{url} does not look like Grafana: /api/frontend/settings has no "
                              "buildInfo.version")  # fmt: skip
    created = False
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as e:
        if e.status_code != 404:
            raise _explain(e, url, "looking up the folder") from e
        try:
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        except errors as e2:
            raise _explain(e2, url, "creating the folder") from e2
        created = True
    except errors as e:
        raise _explain(e, url, "looking up the folder") from e
    done = []
    for uid, d in dashboards.items():
        body = {"dashboard": {**d, "id": None}, "folderUid": FOLDER_UID, "overwrite": True,
                "message": "stormwatch dashboards push"}  # fmt: skip
        try:
            r = api.dashboard.update_dashboard(body)
        except errors as e:
            raise _explain(e, url, f"saving dashboard {uid}") from e
        done.append((uid, str(r.get("url", "")) if isinstance(r, dict) else ""))
    return Pushed(created, done)
