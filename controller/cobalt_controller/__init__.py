"""cobalt's controller: state, scheduling and the gRPC API.

Run it with ``cobalt controller start`` (or ``python -m cobalt_controller serve``).
It never unpickles user payloads; it moves bytes.
"""

from cobalt_controller._config import ControllerConfig, ExecutorConfig, load_config
from cobalt_controller._server import ControllerServer, serve

__all__ = ["ControllerConfig", "ControllerServer", "ExecutorConfig", "load_config", "serve"]
