"""The controller's side of the agent protocol: agent credentials, the agent
service, and the certificate the controller presents beyond loopback."""

from cobalt_controller.agents._service import AgentsServicer, AgentTokens
from cobalt_controller.agents._tls import ControllerCertificate
from cobalt_controller.agents._tokens import AgentKeys, AgentScope

__all__ = ["AgentKeys", "AgentScope", "AgentTokens", "AgentsServicer", "ControllerCertificate"]
