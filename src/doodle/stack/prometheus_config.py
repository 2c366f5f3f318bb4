"""The shipped Prometheus configuration, and copies of it pointed at other addresses."""

from importlib import resources
from pathlib import Path

# pip installs packages unzipped, so the package data is a real folder: promtool and Prometheus read it.
SHIPPED_DIR = Path(str(resources.files("doodle.monitoring") / "prometheus"))
SHIPPED_TARGETS = {  # prometheus.yml's job -> target, as docker-compose.yml names the services
    "backend": "fastapi-backend:8000",
    "pipeline": "pipeline-viewer:8001",
    "model-server": "model-server:5002",
    "node": "host.docker.internal:9100",
}


def write_config(directory: Path, addresses: dict[str, str]) -> Path:
    """Write the shipped prometheus.yml, only its target addresses replaced (job -> host:port), beside
    alerts.yml into `directory`; returns the new prometheus.yml."""
    text = (SHIPPED_DIR / "prometheus.yml").read_text()
    for job, shipped in SHIPPED_TARGETS.items():
        if text.count(f'"{shipped}"') != 1:
            raise ValueError(f"{shipped} is not the {job} target of prometheus.yml")
        text = text.replace(f'"{shipped}"', f'"{addresses[job]}"')
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(text)
    (directory / "alerts.yml").write_text((SHIPPED_DIR / "alerts.yml").read_text())
    return directory / "prometheus.yml"
