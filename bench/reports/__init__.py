"""Reports from result rows: paper-shaped tables, the leaderboard and figures, all measured.

Each protocol renders its own rows (`Protocol.reports`); `bench.protocols.render` dispatches on
each row's `protocol` and writes the shared leaderboard.
"""
