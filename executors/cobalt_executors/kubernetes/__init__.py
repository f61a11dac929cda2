"""Kubernetes: cobalt agents in pilot pods or Jobs, through the official client.

- ``_names``: names and quantities as the API server checks them.
- ``_manifests``: the pod, Job and Secret manifests, and the options they share.
- ``_api``: the client calls the executor makes, their refusals as cobalt errors.
- ``_executor``: the executor, following its pods with one watch.
"""

from cobalt_executors.kubernetes._executor import KubernetesExecutor

__all__ = ["KubernetesExecutor"]
