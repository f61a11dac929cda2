"""Running cobalt on the user's own machines over SSH.

The SSH executor reaches each configured host with ``asyncssh``, starts an
agent there under ``setsid`` (so that it leads its own process group), and
stops it by killing that group from a second exec: signals sent over an SSH
channel are refused for root, and closing a channel leaves the process
running.

The building blocks live in private modules:

- :mod:`cobalt_executors.ssh._hosts` parses and checks the executor's
  ``hosts`` option, one table per host.
- :mod:`cobalt_executors.ssh._remote` connects to one host and runs, watches,
  kills and tunnels for processes there, behind a synchronous, typed API.
- :mod:`cobalt_executors.ssh._supervisor` keeps one host's agent running.
- :mod:`cobalt_executors.ssh._executor` is the executor, type ``ssh``.

Host key checking is on unless a host says ``known_hosts = "insecure-accept-any"``,
which accepts any key that host presents, and so any machine that answers in its
place: use it only on a network you trust completely, and never for a host whose
traffic leaves it.
"""

from cobalt_executors.ssh._executor import SshExecutor

__all__ = ["SshExecutor"]
