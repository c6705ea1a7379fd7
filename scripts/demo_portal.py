"""Part of `make demo`: two crm.item.update calls to the sandbox portal at WEBHOOK_URL.

Shows what the portal stores for the reference's deal example, and how it
silently stores a boolean given as 1 as "N" (the trap the worker refuses).
"""

from __future__ import annotations

import sys
import time

import httpx


def main(webhook: str) -> int:
    with httpx.Client(base_url=webhook, timeout=10) as portal:
        for _ in range(100):
            try:
                portal.get("crm.item.get.json", params={"entityTypeId": 2, "id": 1})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        fields = {"title": "REST Deal #1", "opened": "N", "observers": [1, 2, 3]}
        answer = portal.post(
            "crm.item.update.json", json={"entityTypeId": 2, "id": 1, "fields": fields}
        ).json()
        item = answer["result"]["item"]
        print("-- the reference's deal update, one JSON call to deal 1:")
        print("   stored:", {name: item[name] for name in ("id", *fields)})
        print("   operating seconds used by crm.item.update so far:", answer["time"]["operating"])
        trap = portal.post(
            "crm.item.update.json", json={"entityTypeId": 2, "id": 2, "fields": {"opened": 1}}
        ).json()
        print(
            "-- opened=1 sent straight to the portal: accepted, and stored as",
            repr(trap["result"]["item"]["opened"]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
