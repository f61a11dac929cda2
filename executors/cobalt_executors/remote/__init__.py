"""Executors whose workers run beyond the controller's machine.

Each such executor starts **agents** where its cluster manager gives it room
(or takes agents that people attach by hand with ``cobalt agent``). An agent
dials the controller over one gRPC stream (``protos/cobalt/v1/agent.proto``),
holds warm workers exactly as the local executor does, and reports outcomes
over the stream; the open stream is its liveness. :mod:`._pool` keeps the
connected agents and what each runs, :mod:`._protocol` converts between the
executor interface's types and the wire, and :mod:`cobalt_executors.agent`
is the agent itself. :mod:`._pilots` keeps the agents an executor starts in
allocations it asks a cluster manager for (Slurm jobs, Kubernetes pods).
"""

from cobalt_executors.remote._executor import AgentsExecutor, RemoteExecutor
from cobalt_executors.remote._pilots import Pilot, PilotExecutor
from cobalt_executors.remote._pool import AgentInfo, AgentLink, AgentPool

__all__ = [
    "AgentInfo",
    "AgentLink",
    "AgentPool",
    "AgentsExecutor",
    "Pilot",
    "PilotExecutor",
    "RemoteExecutor",
]
