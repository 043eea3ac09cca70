"""The admin's web UI: server-rendered pages (jinja2) under ``/ui/``, one stylesheet, one script.

One module per page, each with a module-level router: ``login`` (and logout), ``overview``
(clusters, nodes, counts, stale groups, recent audit), ``virtual_servers``, ``groups`` (the
searchable list with health roll-ups, one group's members with every flag), ``act`` (member
actions), ``versions`` (diff, activate, rollback), ``audit``, ``route`` ("which group serves
this URL"), ``split`` (a route's split weights changed and activated), ``canary`` (canary
activation, its live ratios, promote and abort), ``take_over`` (a node of another store, or
ahead), ``edit`` (virtual servers, routes and groups as drafts), ``certificates`` (upload,
renew). ``pages`` holds what they share, ``text`` how values are shown.

A page parses the request, gets the caller's session from a dependency (``admin.web.deps``:
no valid session, the browser goes to the login page), calls the service and renders. The
role is checked again on every action, whatever buttons the page showed. Errors of the service
(invalid input, conflicting edits, unknown objects) are shown on the page, never as raw JSON.

Live figures: ``GET /ui/api/groups/{name}/live`` and ``GET /ui/api/nodes`` (session-authenticated
JSON) are polled every 2 s by ``static/ui.js``, which updates the cells in place.
"""

from __future__ import annotations

from fastapi import APIRouter

from admin.web.ui import (
    act,
    audit,
    canary,
    certificates,
    edit,
    groups,
    login,
    overview,
    route,
    split,
    take_over,
    versions,
    virtual_servers,
)

PAGES: tuple[APIRouter, ...] = tuple(m.router for m in (
    login, overview, virtual_servers, groups, act, versions, audit, route, split, canary,
    take_over, edit, certificates))
