"""Dispatches: workflows of tasks that the controller schedules, bills and reports.

- :mod:`._intake`: a dispatch request checked and turned into live tasks.
- :mod:`._model`: the live state of dispatches and tasks, and their statuses.
- :mod:`._scheduler`: the thread that places ready tasks, applies outcomes,
  retries, enforces time limits and budgets, and commits each round.
- :mod:`._budget` and :mod:`._cost`: budgets held per dispatch, and estimates
  and summaries of what dispatches cost.
- :mod:`._events`: committed changes fanned out to clients watching a dispatch.

Callers import from these modules directly: this package re-exports nothing,
so that importing one of them never imports the scheduler.
"""
