"""The ``cobalt`` command line: runs in the user's shell, a client of the controller.

``cobalt = cobalt.cli.entry_point:main`` is the console script; ``python -m
cobalt.cli`` runs the same. One module per command group: :mod:`.dispatches`,
:mod:`.deployments`; the root parser and the small commands are in
:mod:`.entry_point`.
"""
