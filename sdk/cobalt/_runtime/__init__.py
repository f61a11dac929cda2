"""Code that runs inside workers and replicas, never in the notebook.

The notebook side builds the objects that travel (a task's
:class:`~cobalt._runtime.task.TaskCallable` or
:class:`~cobalt._runtime.sublattice.SublatticeCall`, a deployment's
:class:`~cobalt._runtime.replica.ReplicaEntry`) and pickles them; a worker or
a replica unpickles them and runs what is here:

- :mod:`.task`: a task's function wrapped with its dependencies (in a worker).
- :mod:`.sublattice`: a sublattice's task, which dispatches its lattice as a
  child of the dispatch it belongs to.
- :mod:`.replica`: a replica's entry point, its socket and its HTTP server.
- :mod:`.replica_app`: the ASGI app serving a service's endpoints.
- :mod:`.validation`: request bodies checked against an endpoint's signature,
  and the OpenAPI document.
- :mod:`.batching`: requests gathered into batches for batched endpoints.
- :mod:`.raw`: routes whose handler writes the whole answer (the OpenAI ones).
- :mod:`.metrics`: the replica's CPU and GPU use, reported with its load.
"""
