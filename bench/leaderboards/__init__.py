"""The reference boards shipped inside the package, one JSON per suite (kind authbench-boards), so that
`authbench rank` finds a suite's board by name from any folder. Each is the `boards` of the checked-in
reference reports/leaderboards/<suite>.json, written by `authbench leaderboard freeze ... --boards
bench/leaderboards/<suite>.json` (tests/test_first_run.py checks the two agree)."""
