"""The autoscaler: one deployment's replica count, decided from its metrics.

The gateway ticks every deployment's :class:`Autoscaler` on its own event
loop (every ``[controller] autoscale_interval_s``, default 1 s). Each tick:

1. asks every policy the deployment sets (:mod:`.policies`) and takes the
   largest answer; a policy that fails is recorded and left out;
2. holds it between ``min_replicas`` (raised by any open schedule's floor)
   and ``max_replicas``;
3. with ``min_replicas=0``, keeps one replica until ``scaledown_window``
   passed without a request, then goes to zero at once;
4. applies hysteresis: a higher count must be wanted for ``upscale_delay``
   (default 0 s) and a lower one for ``downscale_delay`` (default 30 s)
   before it is taken; going down, the highest count wanted meanwhile wins.

Whenever the count changes or a policy fails, it returns an event with the
inputs (metrics, settings, each policy's answer) and a reason sentence. Every
:data:`COLLECT_EVERY_S` it also returns the replicas' ``/_cobalt/metrics``
answers as a :data:`READINGS` event, which the manager keeps as the
deployment's metrics (:mod:`._model_metrics`) instead of recording it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from cobalt_common.deploy import Autoscaling
from cobalt_controller.deploy.policies import BUILT_IN, Decision, Metrics, Policy

ERROR_REPEAT_S = 60.0
"""A policy failing the same way again is recorded at most this often."""
COLLECT_EVERY_S = 5.0
"""How often the replicas' metrics are read for the deployment's metrics."""
READINGS = "replica_readings"
"""The kind of event that carries the replicas' metrics (``inputs``: ``at``, ``reports``)."""


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A decision or a policy error, as recorded in the deployment's events, or the
    replicas' readings (kind :data:`READINGS`), which are kept, not recorded."""

    kind: str
    message: str
    inputs: dict[str, Any] = field(default_factory=dict)

    def inputs_json(self) -> str:
        return json.dumps(self.inputs, default=str, sort_keys=True)


def settings_summary(a: Autoscaling) -> dict[str, Any]:
    """The settings a decision depends on, for the record."""
    return {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "target_concurrency": a.target_concurrency,
        "requests_per_second": a.requests_per_second,
        "utilization": a.utilization,
        "upscale_delay_s": a.seconds("upscale_delay"),
        "downscale_delay_s": a.seconds("downscale_delay"),
        "scaledown_window_s": a.seconds("scaledown_window"),
        "schedules": len(a.schedules),
        "custom_policy": a.policy is not None,
    }


class Autoscaler:
    """Hysteresis state and policies of one deployment.

    Args:
        settings: the deployment's autoscaling settings.
        current: the replica count it runs with now.
    """

    def __init__(self, settings: Autoscaling, current: int) -> None:
        self.current = current
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._down_max = 0
        self._errors: dict[str, tuple[str, float]] = {}
        self._read_at = float("-inf")
        self.configure(settings)

    def configure(self, settings: Autoscaling) -> None:
        """New settings (a redeploy); the hysteresis timers start over."""
        self.settings = settings
        self.policies: list[Policy] = [
            p for p in (cls.from_settings(settings) for cls in BUILT_IN) if p is not None
        ]
        self._up_since = self._down_since = None

    def woke(self) -> None:
        """The gateway started a replica for a request while at zero."""
        self.current = max(self.current, 1)
        self._up_since = self._down_since = None

    async def tick(self, metrics: Metrics) -> tuple[int | None, list[ScaleEvent]]:
        """One decision: the new count (None when unchanged) and events to record."""
        now = metrics.now or time.time()
        metrics.current = self.current
        a = self.settings
        events: list[ScaleEvent] = []
        decisions: dict[str, Decision] = {}
        for policy in self.policies:
            try:
                decision = await policy.decide(metrics)
            except Exception as exc:
                event = self._error(policy, exc, metrics, now)
                if event is not None:
                    events.append(event)
                continue
            self._errors.pop(policy.name, None)
            if decision is not None:
                decisions[policy.name] = decision
        if decisions:
            top_name, top = max(decisions.items(), key=lambda kv: kv[1].replicas)
            wanted, reason = top.replicas, f"{top_name}: {top.reason}"
        else:
            wanted, reason = self.current, "no policy had anything to go on; count kept"
        floor = max([a.min_replicas, *(p.floor(metrics) for p in self.policies)])
        target = wanted
        if target < floor:
            target = floor
            reason += f"; held at the floor of {floor} (min_replicas or an open schedule)"
        if target > a.max_replicas:
            target = a.max_replicas
            reason += f"; capped at max_replicas={a.max_replicas}"
        window = a.seconds("scaledown_window")
        if target == 0 and self.current > 0 and metrics.replicas == 0:
            target = 1
            reason += "; a replica is starting: it is not stopped before it has served"
        elif target == 0 and self.current > 0 and metrics.idle_s < window:
            target = 1
            reason += (
                f"; one replica stays until {window:g} s pass without a request "
                f"(idle {metrics.idle_s:.0f} s)"
            )
        elif target == 0 and self.current > 0:
            reason += f"; no request for {metrics.idle_s:.0f} s (scaledown_window {window:g} s)"
        new = self._hysteresis(target, now)
        if new is not None:
            kind = "scale_up" if new > self.current else "scale_down"
            inputs = {
                "metrics": metrics.as_dict(),
                "settings": settings_summary(a),
                "decisions": {
                    name: {"replicas": d.replicas, "reason": d.reason, "inputs": d.inputs}
                    for name, d in decisions.items()
                },
                "wanted": wanted,
                "target": new,
            }
            events.append(
                ScaleEvent(kind, f"{self.current} -> {new} replica(s): {reason}.", inputs)
            )
            self.current = new
        readings = await self._readings(metrics, now)
        if readings is not None:
            events.append(readings)
        return new, events

    async def _readings(self, metrics: Metrics, now: float) -> ScaleEvent | None:
        """The replicas' metrics, every :data:`COLLECT_EVERY_S` (None in between)."""
        if now - self._read_at < COLLECT_EVERY_S or metrics.probe is None or not metrics.replicas:
            return None
        self._read_at = now
        try:
            reports = await metrics.replica_reports()
        except Exception:  # a replica that cannot answer now is read next time
            return None
        return ScaleEvent(READINGS, "", {"at": now, "reports": reports}) if reports else None

    def _hysteresis(self, target: int, now: float) -> int | None:
        a = self.settings
        if target > self.current:
            self._down_since = None
            if self._up_since is None:
                self._up_since = now
            if now - self._up_since >= a.seconds("upscale_delay"):
                self._up_since = None
                return target
            return None
        if target < self.current:
            self._up_since = None
            if self._down_since is None:
                self._down_since, self._down_max = now, target
            else:
                self._down_max = max(self._down_max, target)
            # Going to zero already waited out scaledown_window.
            if target == 0:
                self._down_since = None
                return 0
            if now - self._down_since >= a.seconds("downscale_delay"):
                self._down_since = None
                return self._down_max
            return None
        self._up_since = self._down_since = None
        return None

    def _error(
        self, policy: Policy, exc: Exception, metrics: Metrics, now: float
    ) -> ScaleEvent | None:
        text = f"{type(exc).__name__}: {exc}"
        last = self._errors.get(policy.name)
        if last is not None and last[0] == text and now - last[1] < ERROR_REPEAT_S:
            return None
        self._errors[policy.name] = (text, now)
        return ScaleEvent(
            "policy_error",
            f"the {policy.name} policy failed and was left out of the decision: {text}",
            {"policy": policy.name, "error": text, "metrics": metrics.as_dict()},
        )
