"""The pitch's workflow: fine-tune several small models in parallel on H100s,
evaluate each, pick the best on a CPU, deploy it behind an HTTP endpoint, and
print what every task ran on. Then call the deployment, and tear it down.

This machine has no GPU, so the executor emulates four H100s (inventory only:
the training runs on the CPU, and every record says so). On a machine with
real H100s, drop ``emulate_gpus`` and the same code runs on them.

Run it with ``scripts/demo``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import cobalt as ct

# prices="list" bills the emulated H100s at published cloud list prices, so the
# cost figures below are what the same run would cost on rented H100s.
GPU_BOX = ct.LocalExecutor(name="gpu-box", emulate_gpus={"h100": 4}, memory="256GB", prices="list")


def make_data(seed: int, n: int = 4000, features: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic two-class problem that a small MLP learns well and a linear model doesn't."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = ((x[:, 0] * x[:, 1] + np.sin(x[:, 2]) - 0.5 * x[:, 3] ** 2) > -0.4).astype(np.float64)
    return x, y


@ct.electron(gpu="h100", memory="48GB", time_limit="18h")
def finetune(hidden: int, lr: float, epochs: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    """Trains a one-hidden-layer MLP with full-batch gradient descent."""
    x, y = make_data(seed)
    rng = np.random.default_rng(seed + hidden)
    w1 = rng.normal(scale=1 / np.sqrt(x.shape[1]), size=(x.shape[1], hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(scale=1 / np.sqrt(hidden), size=hidden)
    b2 = 0.0
    for epoch in range(epochs):
        h = np.tanh(x @ w1 + b1)
        p = 1 / (1 + np.exp(-(h @ w2 + b2)))
        grad_out = (p - y) / len(y)
        grad_h = np.outer(grad_out, w2) * (1 - h**2)
        w2 -= lr * h.T @ grad_out
        b2 -= lr * grad_out.sum()
        w1 -= lr * x.T @ grad_h
        b1 -= lr * grad_h.sum(axis=0)
        if epoch % 20 == 0:
            loss = -np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))
            print(f"hidden={hidden} lr={lr} epoch={epoch} loss={loss:.4f}")
    return {"w1": w1, "b1": b1, "w2": w2, "b2": np.array(b2), "hidden": np.array(hidden)}


@ct.electron(gpu="h100", memory="48GB", time_limit="1h")
def evaluate(model: dict[str, np.ndarray], seed: int = 1) -> float:
    """Accuracy on held-out data drawn from the same distribution."""
    x, y = make_data(seed)
    h = np.tanh(x @ model["w1"] + model["b1"])
    p = 1 / (1 + np.exp(-(h @ model["w2"] + model["b2"])))
    return float(np.mean((p > 0.5) == y))


@ct.electron(gpu=None, cpus=1, time_limit="10m")
def pick_best(
    configs: list[dict[str, float]], scores: list[float], models: list[dict[str, np.ndarray]]
) -> dict[str, Any]:
    best = int(np.argmax(scores))
    return {**configs[best], "accuracy": scores[best], "weights": models[best]}


# The best model, served: each replica holds an (emulated) H100 on the same box and
# loads the weights once; POST <url>/predict answers with class probabilities.
@ct.service(
    name="mlp-classifier",
    gpu="h100",
    memory="16GB",
    executor=GPU_BOX,
    autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=2),
)
def mlp_classifier(best: dict[str, Any]) -> dict[str, Any]:
    return {"weights": best["weights"]}


@mlp_classifier.endpoint("/predict")
def predict(weights: dict[str, np.ndarray], features: list[list[float]]) -> dict[str, list[float]]:
    x = np.asarray(features, dtype=np.float64)
    h = np.tanh(x @ weights["w1"] + weights["b1"])
    p = 1 / (1 + np.exp(-(h @ weights["w2"] + weights["b2"])))
    return {"p_class_1": np.round(p, 3).tolist()}


@ct.lattice(executor=GPU_BOX)
def finetune_and_deploy(configs: list[dict[str, float]]) -> dict[str, Any]:
    models = [finetune(int(c["hidden"]), c["lr"]) for c in configs]
    scores = [evaluate(m) for m in models]
    best = pick_best(configs, scores, models)
    # Inside a lattice, deploying is a task too: it runs once the best model is known.
    return {"best": best, "deployment": ct.deploy(mlp_classifier)(best)}


def main() -> None:
    configs = [
        {"hidden": 8, "lr": 0.5},
        {"hidden": 32, "lr": 0.5},
        {"hidden": 64, "lr": 1.0},
        {"hidden": 128, "lr": 1.0},
    ]
    estimate = ct.estimate(finetune_and_deploy)(configs)
    print(estimate.summary())
    # The time limits bound the worst case; the budget is a hard cap on top.
    dispatch_id = ct.dispatch(finetune_and_deploy, budget_usd=400)(configs)
    print(f"dispatched {dispatch_id} with a $400 budget; waiting for the result ...")
    result = ct.get_result(dispatch_id, wait=True)
    print(f"\nstatus: {result.status}, {result.cost_line()}")
    if result.status != ct.Status.COMPLETED:
        raise SystemExit(result.error)
    best, dep = result.result["best"], result.result["deployment"]
    print(
        f"best model: hidden={best['hidden']:g} lr={best['lr']:g} accuracy={best['accuracy']:.3f}\n"
    )
    print(result.task_table())
    emulated = sum(1 for t in result.tasks if t.emulated)
    print(f"\n{emulated} of {len(result.tasks)} tasks ran on emulated H100s (CPU underneath).")
    serve(dep)
    print("The graph, each task's logs and the cost by day: run `cobalt dashboard`.")


def serve(dep: ct.Deployment) -> None:
    """Calls the deployed model, shows what it runs on and costs, and tears it down."""
    print(f"\ndeployed {dep.name} at {dep.url} ({dep.replicas} replica ready)")
    x, y = make_data(seed=2, n=1000)
    for features, label in zip(x[:3].tolist(), y[:3], strict=True):
        answer = dep.predict(features=[features])
        print(f"POST {dep.url}/predict -> {answer} (true class {label:g})")
    p = np.asarray(dep.predict(features=x.tolist())["p_class_1"])
    print(f"accuracy of the deployed model on 1000 new samples: {np.mean((p > 0.5) == y):.3f}")
    # The command line's view: URL, replicas and what they have cost so far.
    print(f"\n$ cobalt deployments show {dep.name}")
    cli = [str(Path(sys.executable).with_name("cobalt")), "deployments", "show", dep.name]
    print(subprocess.run(cli, check=True, capture_output=True, text=True).stdout, end="")
    dep.teardown()
    print(f"\ndep.teardown(): {dep.name} is {dep.status}")


if __name__ == "__main__":
    main()
