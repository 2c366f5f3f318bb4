"""The `doodle` command: every entry point of the project."""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from doodle.config import get_settings
from doodle.log import configure_logging
from doodle.stack.catalogue import Ports, Service

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
DEFAULT_PORTS = Ports()


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    from doodle.model.train_config import TrainConfig

    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        if item.type is bool or item.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=item.default)
        else:
            kind = int if "int" in str(item.type) else float if "float" in str(item.type) else str
            parser.add_argument(flag, type=kind, default=item.default)


def _add_listen_flags(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=port)


def cmd_train(args: argparse.Namespace) -> int:
    import mlflow

    from doodle.model.registry import configure_mlflow, log_and_register
    from doodle.model.train import TrainConfig, train

    settings = get_settings()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"train-{config.arch}"):
        result = train(config, args.data, args.out)
        if args.register:
            metrics = result.test.metrics("test_") if result.test else {}
            log_and_register(result.checkpoint, settings.model_name, metrics)
    print(f"checkpoint: {result.checkpoint} (best epoch {result.best_epoch + 1})")  # noqa: T201
    print(f"val   top-1 {result.val.top1:.4f}  top-3 {result.val.top3:.4f}")  # noqa: T201
    if result.test:
        print(f"test  top-1 {result.test.top1:.4f}  top-3 {result.test.top3:.4f}")  # noqa: T201
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from doodle.categories import InvalidCategoryError, normalize_category
    from doodle.model.fetch import FetchError, fetch

    settings = get_settings()
    out = args.out or settings.var_dir / "quickdraw"
    try:
        categories = [normalize_category(name) for name in args.categories]
        if not categories:
            from doodle.model.net import checkpoint_categories
            from doodle.model.registry import bundled_checkpoint

            categories = checkpoint_categories(bundled_checkpoint())
        saved = fetch(categories, out, args.rows, settings.quickdraw_url)
    except (InvalidCategoryError, FetchError) as error:
        print(f"failed: {error}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"{len(saved)} categories in {out}")  # noqa: T201
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import mlflow

    from doodle.model.data import load_dataset
    from doodle.model.evaluate import evaluate, plot_confusion
    from doodle.model.net import load_checkpoint
    from doodle.model.registry import bundled_checkpoint, configure_mlflow

    settings = get_settings()
    net, categories, meta = load_checkpoint(args.checkpoint or bundled_checkpoint())
    split_config = meta.get("train_config", {})
    dataset = load_dataset(
        args.data,
        args.split,
        categories=categories,
        val_fraction=split_config.get("val_fraction", 0.1),
        test_fraction=split_config.get("test_fraction", 0.1),
        seed=split_config.get("split_seed", 0),
    )
    report = evaluate(net, dataset)
    print(f"{args.split} rows {len(dataset)}: top-1 {report.top1:.4f}  top-3 {report.top3:.4f}")  # noqa: T201
    for name, accuracy in sorted(report.per_class_top1.items(), key=lambda kv: kv[1]):
        print(f"  {name:<16} {accuracy:.4f}")  # noqa: T201
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"evaluate-{args.split}"):
        mlflow.log_metrics(report.metrics(f"{args.split}_"))
        mlflow.log_metrics({f"{args.split}_top1_{k}": v for k, v in report.per_class_top1.items()})
        mlflow.log_figure(plot_confusion(report, categories), f"confusion_{args.split}.png")
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from doodle.model.registry import bootstrap, configure_mlflow

    settings = get_settings()
    configure_mlflow(settings)
    version = bootstrap(settings.model_name, settings.model_alias, args.checkpoint)
    print(f"{settings.model_name}@{settings.model_alias} is version {version}")  # noqa: T201
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from doodle.api.app import create_app_from_env
    from doodle.api.server import DrainingServer

    # No access log: a line per prediction cost 10% of the backend's CPU; /metrics counts requests.
    options = {"host": args.host, "port": args.port, "access_log": False}
    if args.workers > 1:
        if args.drain_seconds:
            print("doodle api: --drain-seconds needs --workers 1", file=sys.stderr)  # noqa: T201
            return 2
        # By name: each of the workers imports it.
        uvicorn.run("doodle.api.app:create_app_from_env", factory=True, workers=args.workers, **options)
        return 0
    app = create_app_from_env()
    DrainingServer(uvicorn.Config(app, **options), args.drain_seconds, app.state.draining).run()
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from doodle.ui.server import create_ui_app

    uvicorn.run(create_ui_app(get_settings()), host=args.host, port=args.port)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from doodle.dashboard.app import create_dashboard_app

    uvicorn.run(create_dashboard_app(get_settings()), host=args.host, port=args.port)
    return 0


def cmd_serve_model(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from doodle.model.registry import configure_mlflow
    from doodle.serving import HotSwapModelServer

    settings = get_settings()
    if settings.model_threads:
        torch.set_num_threads(settings.model_threads)
    configure_mlflow(settings)
    server = HotSwapModelServer(settings.model_name, settings.model_alias, poll_s=args.poll)
    uvicorn.run(server, host=args.host, port=args.port, log_level="warning")
    return 0


def print_services(services: list[Service]) -> None:
    from doodle.stack.supervisor import is_healthy

    width = max(len(service.name) for service in services)
    for service in services:
        state = "healthy" if is_healthy(service) else "NOT HEALTHY"
        print(f"  {service.name:<{width}}  {service.url:<40}  {state}")  # noqa: T201
    print("All services are up. Press Ctrl-C to stop.", flush=True)  # noqa: T201  shown at once in a pipe or file


def cmd_run(args: argparse.Namespace) -> int:
    from doodle.stack import supervisor
    from doodle.stack.catalogue import local_stack

    cmd_bootstrap(argparse.Namespace(checkpoint=None))
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_dir / "stack.log")
    ports = Ports(**{item.name: getattr(args, f"{item.name}_port") for item in dataclasses.fields(Ports)})
    services = local_stack(settings, args.host, ports, args.watch_interval)
    return supervisor.run(services, settings.log_dir, on_ready=print_services)


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from doodle.pipeline import runs
    from doodle.pipeline.orchestrator import PipelineBusyError, run_pipeline

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_dir / "pipeline.log")
    try:
        return run_pipeline(settings, runs.connect(settings.database_url))
    except PipelineBusyError as error:
        print(f"refused: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except runs.RunStoreUnavailableError as error:
        print(f"failed: {error}; the run stopped: {error.detail}", file=sys.stderr)  # noqa: T201
        return 1


def cmd_pipeline_status(args: argparse.Namespace) -> int:
    from doodle.pipeline import runs
    from doodle.pipeline.stages import STAGES

    try:
        recent = runs.list_runs(runs.connect(get_settings().database_url), limit=args.limit)
    except runs.RunStoreUnavailableError as error:
        print(f"failed: {error}: {error.detail}", file=sys.stderr)  # noqa: T201
        return 1
    for run in recent:
        stages = " ".join(f"{stage}={run.status(stage)}" for stage in STAGES)
        print(f"run {run.run_id:>4}  {run.start_time:%Y-%m-%d %H:%M:%S}  {stages}  {run.message or ''}")  # noqa: T201
    return 0


def cmd_model_rollback(args: argparse.Namespace) -> int:
    from doodle.model.registry import NothingToRollBackError, configure_mlflow, rollback

    settings = get_settings()
    configure_mlflow(settings)
    try:
        current, previous = rollback(settings.model_name, settings.model_alias)
    except NothingToRollBackError as error:
        print(f"refused: {error}; nothing to roll back to", file=sys.stderr)  # noqa: T201
        return 2
    print(f"{settings.model_name}@{settings.model_alias}: version {current} -> {previous}")  # noqa: T201
    return 0


def cmd_pipeline_watch(args: argparse.Namespace) -> int:
    from doodle.pipeline import runs
    from doodle.pipeline.orchestrator import watch

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_dir / "pipeline.log")
    watch(settings, runs.connect(settings.database_url), args.interval)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="doodle", description="Self-improving doodle classifier.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on <category>.npy files")
    train.add_argument("--data", type=Path, required=True, help="folder of <category>.npy files")
    train.add_argument("--out", type=Path, default=Path("var/checkpoints/doodle_cnn.pt"))
    train.add_argument("--register", action="store_true", help="register the result in MLflow")
    _add_train_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="top-1/top-3 accuracy of a checkpoint")
    evaluate.add_argument("--data", type=Path, required=True)
    evaluate.add_argument("--checkpoint", type=Path, help="defaults to the bundled model")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.set_defaults(handler=cmd_evaluate)

    data = commands.add_parser("data", help="training data").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download Google's Quick, Draw! bitmaps, the first rows of each category")
    fetch.add_argument("categories", nargs="*", help="defaults to the bundled model's categories")
    fetch.add_argument("--rows", type=int, default=5000, help="drawings per category (default 5000)")
    fetch.add_argument("--out", type=Path, help="folder of <category>.npy files (default <VAR_DIR>/quickdraw)")
    fetch.set_defaults(handler=cmd_data_fetch)

    bootstrap = commands.add_parser("bootstrap", help="register the bundled model if none is deployed")
    bootstrap.add_argument("--checkpoint", type=Path, help="defaults to the bundled model")
    bootstrap.set_defaults(handler=cmd_bootstrap)

    api = commands.add_parser("api", help="run the FastAPI backend")
    _add_listen_flags(api, DEFAULT_PORTS.api)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="on SIGTERM, answer /health with 503 but keep serving this long before stopping (default 0)",
    )
    api.set_defaults(handler=cmd_api)

    ui = commands.add_parser("ui", help="serve the drawing UI")
    _add_listen_flags(ui, DEFAULT_PORTS.ui)
    ui.set_defaults(handler=cmd_ui)

    dashboard = commands.add_parser("dashboard", help="serve the pipeline viewer")
    _add_listen_flags(dashboard, DEFAULT_PORTS.dashboard)
    dashboard.set_defaults(handler=cmd_dashboard)

    pipeline = commands.add_parser("pipeline", help="the retraining pipeline").add_subparsers(
        dest="pipeline_command", required=True
    )
    pipeline.add_parser("run", help="run the seven stages once").set_defaults(handler=cmd_pipeline_run)
    status = pipeline.add_parser("status", help="recent runs, newest first")
    status.add_argument("--limit", type=int, default=10)
    status.set_defaults(handler=cmd_pipeline_status)
    watch = pipeline.add_parser("watch", help="run whenever enough new drawings wait")
    watch.add_argument("--interval", type=float, default=60.0, help="seconds between checks")
    watch.set_defaults(handler=cmd_pipeline_watch)

    model = commands.add_parser("model", help="the deployed model").add_subparsers(dest="model_command", required=True)
    model.add_parser(
        "rollback", help="move the deployment alias back to the version it replaced (model servers follow)"
    ).set_defaults(handler=cmd_model_rollback)

    serve = commands.add_parser("serve-model", help="serve name@alias, following the alias when it moves")
    _add_listen_flags(serve, DEFAULT_PORTS.model)
    serve.add_argument("--poll", type=float, default=2.0, help="seconds between registry checks")
    serve.set_defaults(handler=cmd_serve_model)

    run = commands.add_parser("run", help="run the whole local stack, restarting any service that exits")
    run.add_argument("--host", default=LOCALHOST)
    for item in dataclasses.fields(Ports):
        when = " (when it is installed)" if item.name in ("prometheus", "node_exporter") else ""
        flag = f"--{item.name.replace('_', '-')}-port"
        run.add_argument(flag, type=int, default=item.default, help=f"default {item.default}{when}")
    run.add_argument("--watch-interval", type=float, default=60.0, help="seconds between pipeline checks")
    run.set_defaults(handler=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
