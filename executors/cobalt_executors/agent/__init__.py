"""The agent: warm workers beyond the controller's machine.

``cobalt agent`` (or a remote executor that starts one in an SSH host or a
Slurm allocation) runs :class:`~cobalt_executors.agent._agent.Agent`. It dials
the controller over one gRPC stream (``protos/cobalt/v1/agent.proto``), runs
each task it is sent in warm worker processes exactly as the local executor
does (the local executor runs inside it), and keeps each outcome until the
controller acknowledges it, across reconnects and controller restarts.
"""
