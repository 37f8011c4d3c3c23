"""The README's demo: a real push to watch (``python3 -m engine.demo``).

It needs nothing beyond a plain install and ``docker-registry`` on the PATH: ``registry`` starts
an anonymous http registry on loopback, ``sample`` writes a deterministic image to push.
"""
