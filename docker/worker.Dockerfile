# The image cobalt's Kubernetes executor runs its agents in: cobalt and its locked
# dependencies, nothing else. Build it from the repository's root:
#
#   docker build -f docker/worker.Dockerfile -t registry.example/cobalt-worker:0.1.0 .
#   docker build -f docker/worker.Dockerfile --build-arg EXTRAS=models -t ...:0.1.0-models .
#
# and name it in the executor's table (image = "registry.example/cobalt-worker:0.1.0").
# PYTHON must be the minor version your notebooks run: a task pickled by Python 3.11
# is refused, with a version-mismatch message, by an agent on another minor version.
# EXTRAS adds cobalt's extras (models: torch and transformers) at their locked versions.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim-bookworm

ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/cobalt/bin:$PATH

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common common
COPY sdk sdk
COPY controller controller
COPY executors executors
# The same lock the README's commands install: every package at its tested version.
RUN python -m venv /opt/cobalt \
 && pip install -c constraints.txt pip setuptools wheel \
 && pip install -c constraints.txt --no-build-isolation "/src${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /src

# Agents and their tasks run as an ordinary user; its home holds the agent's folder.
RUN useradd --create-home --uid 10001 cobalt
USER 10001
WORKDIR /home/cobalt
# The executor gives each pod its command (python -m cobalt_executors.agent ...).
CMD ["python", "-m", "cobalt_executors.agent", "--help"]
