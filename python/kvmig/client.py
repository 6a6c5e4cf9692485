# SPDX-License-Identifier: MIT
"""A client for kvmigd's control API (docs/AGENT.md): HTTP/1.1 + JSON over the
agent's unix socket, or over TCP with its bearer token. Standard library only.

    c = Client("unix:/run/kvmigd/kvmigd.sock")
    mid = c.migrate(["req-17"], to="10.0.0.2:7400")
    m = c.wait(mid)            # {"state": "committed", ...}
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from typing import Any, Iterator, Optional

__all__ = ["Client", "AgentError", "FINAL_STATES"]

FINAL_STATES = ("committed", "aborted", "in_doubt")


class AgentError(Exception):
    """The agent refused a request: ``status`` (HTTP) and its one-sentence ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Client:
    """One agent's API. ``address``: ``unix:PATH`` (or a path), or ``http://HOST:PORT``
    with ``token`` (bytes or str) or ``token_file``. ``timeout``: seconds per request
    (long polls add their wait)."""

    def __init__(self, address: str, *, token: Any = None, token_file: Optional[str] = None,
                 timeout: float = 30.0):
        if token_file is not None:
            with open(token_file, "rb") as f:
                token = f.read().rstrip(b"\r\n")
        if isinstance(token, str):
            token = token.encode()
        self._token = token
        self._timeout = timeout
        if address.startswith("http://"):
            u = urllib.parse.urlsplit(address)
            if not u.hostname or not u.port:
                raise ValueError(f"address {address!r}: expected http://HOST:PORT")
            self._unix, self._host, self._port = None, u.hostname, u.port
        else:
            self._unix = address[5:] if address.startswith("unix:") else address
            self._host = self._port = None
        self.address = address

    # ---- transport ----

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, raw: bool = False,
                extra_timeout: float = 0.0) -> Any:
        """One request; the decoded JSON (or the text with ``raw``). Raises AgentError
        for a 4xx / 5xx, with the agent's sentence."""
        headers = {}
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = "Bearer " + self._token.decode()
        c = self._conn(self._timeout + extra_timeout)
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            text = r.read().decode("utf-8", "replace")
        finally:
            c.close()
        if r.status >= 400:
            try:
                msg = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = text.strip() or r.reason
            raise AgentError(r.status, msg)
        if raw:
            return text
        return json.loads(text)

    # ---- the API ----

    def health(self) -> dict:
        return self.request("GET", "/healthz")

    def pager(self) -> dict:
        """Meta, format, capacity, free and used pages, sequences."""
        return self.request("GET", "/v1/pager")

    def migrate(self, seqs: list, to: str, *, mode: str = "move", live: Any = None,
                transport: Optional[str] = None, timeout_ms: Optional[int] = None,
                paths: Optional[int] = None, idempotency_key: Optional[str] = None) -> str:
        """Start moving (or copying) ``seqs`` to the agent whose data address is ``to``.
        ``live``: True, or {"max_downtime_ms": N, "max_rounds": K}. ``paths``: connections
        to each of the destination's path addresses (1..8). Returns the id."""
        body: dict = {"seqs": list(seqs), "to": to, "mode": mode}
        if live is not None:
            body["live"] = live
        if transport is not None:
            body["transport"] = transport
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        if paths is not None:
            body["paths"] = paths
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self.request("POST", "/v1/migrations", body)["id"]

    def migration(self, mid: str, *, wait_ms: int = 0) -> dict:
        """A migration's state; with ``wait_ms``, once it ends or after that long."""
        q = f"?wait_ms={int(wait_ms)}" if wait_ms else ""
        return self.request("GET", f"/v1/migrations/{mid}{q}", extra_timeout=wait_ms / 1e3)

    def wait(self, mid: str, timeout: float = 60.0) -> dict:
        """Long-poll until the migration ends (committed, aborted or in_doubt)."""
        until = time.monotonic() + timeout
        while True:
            left = until - time.monotonic()
            m = self.migration(mid, wait_ms=max(1, min(60000, int(left * 1e3))))
            if m["state"] in FINAL_STATES:
                return m
            if left <= 0:
                raise TimeoutError(f"migration {mid} is still {m['state']} after {timeout} s")

    def migrations(self) -> list:
        """Running and recent migrations, newest first."""
        return self.request("GET", "/v1/migrations")["migrations"]

    def abort(self, mid: str) -> dict:
        """Ask a running migration to abort (before its decision it does, with the
        usual guarantees; after it, it completes). AgentError 409 once it has ended."""
        return self.request("DELETE", f"/v1/migrations/{mid}")

    def records(self) -> dict:
        """Migration records in the pager; ``in_doubt`` ones wait for resolution."""
        return self.request("GET", "/v1/records")

    def resolve(self, record: str, peer_state: str) -> dict:
        """Apply record ``record`` from the other side's state of it ("none" if it has
        no such record)."""
        return self.request("POST", f"/v1/records/{record}/resolve", {"peer_state": peer_state})

    def resolve_with(self, peer: "Client") -> dict:
        """Resolve every in-doubt record this agent shares with ``peer`` (the other
        side's agent): each side applied from the other's current state, the side
        that must move first first. Returns the summed counts."""
        total = {"activated": 0, "finished": 0, "aborted": 0, "in_doubt": 0, "in_progress": 0}

        def state_of(c: "Client", rid: str) -> str:
            for r in c.records()["records"]:
                if r["migration"] == rid:
                    return r["state"]
            return "none"

        mine = [r for r in self.records()["records"] if r["in_doubt"]]
        theirs = [r for r in peer.records()["records"] if r["in_doubt"]]
        ids = {r["migration"] for r in mine} | {r["migration"] for r in theirs}
        for rid in sorted(ids):
            # Destination first (it activates from a decided source), then the
            # source (it releases once the destination is activated), then the
            # destination again (it closes once the source has released).
            for _ in range(3):
                for a, b in ((self, peer), (peer, self)):
                    st = state_of(a, rid)
                    if st == "none":
                        continue
                    try:
                        res = a.resolve(rid, state_of(b, rid))
                    except AgentError as e:
                        if e.status in (404, 409):
                            continue
                        raise
                    for k in total:
                        total[k] += res.get(k, 0) if k != "in_doubt" else 0
        total["in_doubt"] = (sum(1 for r in self.records()["records"] if r["in_doubt"]) +
                             sum(1 for r in peer.records()["records"] if r["in_doubt"]))
        return total

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self.request("GET", "/metrics", raw=True)

    def events(self, since: Optional[int] = None, follow: bool = True) -> Iterator[dict]:
        """The event lines as dicts (``since``: from that event's seq on; ``follow=False``:
        what the agent has, then stop)."""
        q = []
        if since is not None:
            q.append(f"since={int(since)}")
        if not follow:
            q.append("follow=0")
        path = "/v1/events" + ("?" + "&".join(q) if q else "")
        headers = {}
        if self._token is not None:
            headers["Authorization"] = "Bearer " + self._token.decode()
        c = self._conn(self._timeout)
        try:
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            if r.status >= 400:
                text = r.read().decode("utf-8", "replace")
                try:
                    msg = json.loads(text)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    msg = text.strip() or r.reason
                raise AgentError(r.status, msg)
            for line in r:
                line = line.strip()
                if line:  # blank lines are keep-alives
                    yield json.loads(line)
        finally:
            c.close()
