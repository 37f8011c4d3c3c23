"""``hoist serve``: the daemon side of ``docker push`` — the Docker Engine API's image routes.

``wire`` holds the pure parts (API versions, ``X-Registry-Auth``, payloads, error bodies);
``app`` the aiohttp server (asyncio) with one ``Engine`` behind it.
"""
