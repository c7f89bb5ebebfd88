"""A minimal informer: list, then watch, keeping a cache of objects by namespace/name and
calling back on every change; relists when the watch expires or breaks."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.e2e.nodeagent.kube import Kube, Obj

Key = tuple[str, str]


def key_of(obj: Obj) -> Key:
    """namespace/name of an object."""
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


class Informer:
    """Keeps `self.items` in sync with one cluster-wide list (pods, services)."""

    def __init__(self, kube: Kube, list_method: Any, on_change: Callable[[str, Obj], None]) -> None:
        self.kube = kube
        self.list_method = list_method
        self.on_change = on_change
        self.items: dict[Key, Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._responses: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="informer", daemon=True)

    def start(self) -> None:
        """Begin listing and watching in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """End the watch now (the open response is shut down) and wait for the thread."""
        self._stop.set()
        for resp in list(self._responses):
            with contextlib.suppress(Exception):
                resp.shutdown()
        self._thread.join(timeout=10)

    def snapshot(self) -> list[Obj]:
        """The cached objects right now."""
        with self.lock:
            return list(self.items.values())

    def _relist(self) -> str:
        """Replace the cache with a fresh list; returns its resourceVersion."""
        listing = self.kube.call(self.list_method)
        assert listing is not None
        fresh = {key_of(o): o for o in listing.get("items") or []}
        with self.lock:
            gone = [o for k, o in self.items.items() if k not in fresh]
            self.items = fresh
        for obj in gone:
            self.on_change("DELETED", obj)
        for obj in fresh.values():
            self.on_change("MODIFIED", obj)
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def _run(self) -> None:
        """list + watch until stopped; any error leads to a relist after a short pause."""
        while not self._stop.is_set():
            try:
                version = self._relist()
                self._watch(version)
            except Exception:
                if self._stop.is_set():
                    return
                time.sleep(0.5)

    def _watch(self, version: str) -> None:
        """Apply watch events to the cache until the watch ends."""
        self._responses.clear()
        for event in self.kube.watch_lines(self.list_method, version, self._responses):
            if self._stop.is_set():
                return
            kind, obj = event["type"], event["object"]
            if kind == "ERROR":
                return
            if kind == "BOOKMARK":
                continue
            with self.lock:
                if kind == "DELETED":
                    self.items.pop(key_of(obj), None)
                else:
                    self.items[key_of(obj)] = obj
            self.on_change(kind, obj)
