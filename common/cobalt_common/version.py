"""cobalt's version, written once.

The distribution's version (``pyproject.toml`` reads it from here),
``ct.__version__`` and the version a controller reports in its status and
``controller.json`` are this string.
"""

__version__ = "0.1.0"
