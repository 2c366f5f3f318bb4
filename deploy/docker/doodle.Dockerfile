# One image for every Python service of the stack: backend, drawing UI, pipeline viewer,
# model server, pipeline watcher and the MLflow tracking server (docker-compose.yml picks
# the command). Build from the repository root:
#   docker build -f deploy/docker/doodle.Dockerfile -t doodle:0.1.0 .
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: the pipeline's version stage commits the DVC pointers of the training data.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# The CPU build of torch first, so that `pip install .` keeps it instead of pulling CUDA. Behind a
# mirror or proxy: --build-arg TORCH_INDEX_URL=<its copy of the CPU wheels> and PIP_INDEX_URL=<its
# PyPI>; torch's own dependencies and everything else come from PIP_INDEX_URL.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN pip install --index-url "$TORCH_INDEX_URL" --extra-index-url "$PIP_INDEX_URL" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /src

# State lives in volumes mounted under /data and /mlflow; creating the folders here gives
# fresh named volumes this user as owner.
RUN useradd --create-home --uid 10001 doodle \
    && mkdir -p /data/drawings /data/pipeline /data/logs /mlflow \
    && chown -R doodle:doodle /data /mlflow
USER doodle
WORKDIR /data
ENV LOG_DIR=/data/logs \
    IMG_DATA_LOCATION=/data/drawings

EXPOSE 5000 5002 8000 8001 9080
CMD ["doodle", "--help"]
