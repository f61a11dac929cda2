"""Custom: the user's ``policy(metrics) -> replicas``.

The controller never runs user code, so the policy runs inside a replica:
the autoscaler POSTs the metrics dict to one ready replica's
``/_cobalt/policy`` and reads ``{"replicas": n}``. With no ready replica it
abstains (from zero, a request or a schedule starts the first one).
"""

from __future__ import annotations

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy.policies.base import Decision, Metrics, Policy


class Custom(Policy):
    """Asks the service's own policy, through one replica."""

    name = "custom"

    @classmethod
    def from_settings(cls, settings: Autoscaling) -> Custom | None:
        return cls() if settings.policy is not None else None

    async def decide(self, metrics: Metrics) -> Decision | None:
        if metrics.probe is None or metrics.replicas == 0:
            return None
        answers = await metrics.probe("/_cobalt/policy", metrics.as_dict())
        if not answers:
            return None
        wanted = answers[0].get("replicas")
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 0:
            raise ValueError(
                f"the custom policy returned {wanted!r}; it must return a whole number >= 0."
            )
        return Decision(wanted, f"the custom policy asked for {wanted}", {"answer": wanted})
