"""How a controller that cannot start tells the process that started it why.

``ct.dispatch`` and ``cobalt controller start`` run the controller detached,
with its output going to ``$COBALT_HOME/controller.log``. When the
configuration is invalid, the controller writes one line holding the reason as
JSON and exits with :data:`CONFIG_EXIT_CODE`; the starter reads the line back
and raises :class:`~cobalt_common.errors.ConfigError` with the same message.

Example:
    >>> line = config_error_line("config.toml: [controller] inline_limit must be positive.")
    >>> find_config_error("INFO starting\\n" + line + "\\n")
    'config.toml: [controller] inline_limit must be positive.'
    >>> find_config_error("INFO starting\\n") is None
    True
"""

from __future__ import annotations

import json

CONFIG_EXIT_CODE = 78
"""The controller's exit status for an invalid configuration (``EX_CONFIG`` of sysexits.h)."""

_MARKER = "cobalt-config-error: "


def config_error_line(message: str) -> str:
    """The one line the controller writes before exiting with :data:`CONFIG_EXIT_CODE`."""
    return _MARKER + json.dumps({"message": message})


def find_config_error(log_text: str) -> str | None:
    """The message of the last :func:`config_error_line` in ``log_text``, if any."""
    for line in reversed(log_text.splitlines()):
        if not line.startswith(_MARKER):
            continue
        try:
            data = json.loads(line[len(_MARKER) :])
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])
    return None
