"""An in-process fake Kubernetes API server for the tests of cobalt's Kubernetes executor.

:class:`FakeKubernetes` serves plain HTTP on 127.0.0.1 to the official ``kubernetes``
client, with bearer-token authentication, and runs each pod's container as a local process
group, so that dial-in, cancel, deadlines, eviction and image-pull failures are exercised
end to end. Objects, errors and defaults follow the Kubernetes 1.37 API server.

API subset served:

* ``GET /version``.
* core/v1 ``pods``: create, get, list, watch, delete (``gracePeriodSeconds`` in the query
  or a DeleteOptions body, ``preconditions``); ``pods/{name}/log`` (``container``,
  ``tailLines``, ``limitBytes``, ``follow``).
* core/v1 ``secrets``: create, get, list, watch, delete.
* batch/v1 ``jobs``: create, get, list, watch, delete (``propagationPolicy`` or
  ``orphanDependents``, query or body; the batch/v1 default is ``Orphan``).
* core/v1 ``events``: get, list, watch (read only; written by the fake's controllers:
  ``Scheduled``, ``FailedScheduling``, ``Failed`` image pulls, the Job controller's
  ``SuccessfulCreate``, ``FailedCreate``, ``Completed``, ``BackoffLimitExceeded``,
  ``DeadlineExceeded``).
* core/v1 ``nodes`` and ``namespaces``: get, list, watch (read only).
* Lists and watches in one namespace or in all, with ``labelSelector`` (``=``, ``==``,
  ``!=``, ``in``, ``notin``, exists, ``!``, ``>``, ``<``), ``fieldSelector`` (the fields
  each resource supports, e.g. ``involvedObject.name`` on events, ``status.phase`` on
  pods), ``limit``/``continue``, and ``resourceVersion``/``timeoutSeconds``/
  ``allowWatchBookmarks`` on watches.

Faithful to the real server: paths, JSON shapes the client's models deserialize, Status
errors (401 Unauthorized, 400 BadRequest for bodies that do not decode, including malformed
quantities such as ``"48GB"``, 404 NotFound, 409 AlreadyExists, 410 Expired as a watch
``ERROR`` event, 422 Invalid with ``details.causes``, 403 Forbidden from quota and
webhooks), defaults (pod spec, containers, Job spec, selector and labels), validation of
names, labels, resources, restart policies, env sources and tolerations, a global
resourceVersion, chunked watch streams that replay from a resourceVersion, graceful
deletion, finalizers, ownerReferences and garbage collection.

Simplified (what the fake does not do, or does differently):

* A malformed quantity (``"48GB"``) is refused with 400 BadRequest, not 422, because the
  real API server refuses it while decoding the body, before validation.
* Only the resources and verbs above; PUT, PATCH, deletecollection, subresources other than
  ``log`` (``status``, ``exec``, ``attach``, ``eviction``), ConfigMaps, Services and
  ResourceQuota objects are not served. ``dryRun`` is ignored.
* Authentication is one bearer token; there is no authorization (RBAC) and no anonymous
  access.
* A namespace that does not exist is refused on create only (404 ``namespaces "x" not
  found``, as the NamespaceLifecycle plugin does); get, list and delete answer as for an
  empty namespace, as a real server does. Namespaces cannot be created or deleted.
* Unknown fields are dropped with a ``Warning`` header, or refused with
  ``fieldValidation=Strict``; duplicate JSON keys are not reported. managedFields are not
  kept.
* Lists always read the latest state (a ``resourceVersion`` on a list is ignored) and a
  ``continue`` token reads the latest state too. Watches end after ``timeoutSeconds``
  capped at ``watch_cap_s`` (default 30 s); a watch without ``timeoutSeconds`` ends at the
  cap. The history kept for resuming is ``history`` events (default 1000).
* One container per pod runs: the first. Init containers and other containers are accepted
  and validated, neither run nor reported in ``containerStatuses``. Images have no
  entrypoint: a container without ``command`` runs its ``args``.
* Containers are not restarted (``restartPolicy`` Always and OnFailure end like Never) and
  there are no probes: a running container is ready.
* Volumes and volume mounts are validated and not mounted; no service-account token is
  mounted; no service environment variables are set. ConfigMap references fail as missing.
* Resource limits are not enforced (no OOM kill, no CPU throttling); requests are only used
  to schedule and to count against quota.
* The scheduler reads ``nodeSelector``, taints and resource requests, not ``affinity`` or
  topology spread; it does not preempt or score (a pod takes the first node, by name, that
  fits). A pod created with ``spec.nodeName`` skips the scheduler and is not checked
  against the node's free resources.
* A pod's processes are one process group, killed together; a process that starts a
  session of its own escapes it (a container's cgroup would not let it).
* The grace period between SIGTERM and SIGKILL is capped at ``grace_cap_s`` (default 5 s).
* Image pulls are instant; a failed pull shows ``ErrImagePull``, then ``ImagePullBackOff``
  after a second, retried every two seconds without the kubelet's exponential back-off.
* The Job controller runs one pod at a time (``parallelism``/``completions`` above 1,
  Indexed Jobs, ``podFailurePolicy`` and ``successPolicy`` are stored and not honoured) and
  replaces a failed pod at once, without the 10 s exponential back-off. A pod creation that
  admission refuses is retried every second.
* Events are recorded by the fake's controllers only; they cannot be created by clients.
"""

from ._admission import AdmissionRequest
from ._fake import EVICTION_MESSAGE, FakeKubernetes
from ._http import RecordedRequest
from ._scheduler import NodeShape

__all__ = ["EVICTION_MESSAGE", "AdmissionRequest", "FakeKubernetes", "NodeShape", "RecordedRequest"]
