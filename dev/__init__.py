"""Development helpers, run from the repository root and never installed: the demo backend and
``devstack`` (``make run``: two demo backends, one proxy node and the admin)."""
