"""MLflow: one MLflow run per output folder, on the tracking server of `mlflow_tracking_uri`
(else `MLFLOW_TRACKING_URI`), in the experiment `mlflow_experiment` (else
`MLFLOW_EXPERIMENT_NAME`, else "twins"). The run is tagged with the output folder
(`twins_output`), the resolved config is its params, each record its metrics at the run's
step; at the end config.yaml, curves.png, run.json and the final evaluation
(`evaluation.json`) are its artifacts.

A resumed run asks the server which (metric, step) pairs the run holds and sends only the
others: steps sent after the checkpoint and before a kill are not sent twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from twins.train.trackers.interface import TrackerStart, scalars, short

OUTPUT_TAG = "twins_output"
FILES = ("config.yaml", "curves.png", "run.json")
# A server that is down must not hold the run for MLflow's default of minutes of retries.
_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def tracking_uri(config: Any) -> str:
    from mlflow.tracking import get_tracking_uri

    return config.mlflow_tracking_uri or get_tracking_uri()  # MLflow reads MLFLOW_TRACKING_URI


def experiment_name(config: Any) -> str:
    return config.mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "twins"


class MlflowTracker:
    name = "mlflow"

    def __init__(self, config: Any, start: TrackerStart) -> None:
        from mlflow import MlflowClient

        for variable, value in _RETRIES.items():
            os.environ.setdefault(variable, value)
        self.client = client = MlflowClient(tracking_uri=tracking_uri(config))
        experiment = _experiment_id(client, experiment_name(config))
        self.run_id = _find_run(client, experiment, start)
        if self.run_id is None:
            run = client.create_run(
                experiment, run_name=Path(start.output).name, tags={OUTPUT_TAG: start.output}
            )
            self.run_id, self.held, held_params = run.info.run_id, set(), {}
        else:
            self.held, held_params = _held(client, self.run_id)
        # A resumed run may change keys that change nothing it computes (data_url, ...): the
        # params stay those the run began with.
        params = {k: str(v) for k, v in start.params.items() if k not in held_params}
        _log_params(client, self.run_id, params)

    def log(self, record: dict[str, Any]) -> bool:
        from mlflow.entities import Metric

        step, now = int(record["step"]), int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, step)
            for key, value in scalars(record).items()
            if (key, step) not in self.held
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
            self.held.update((metric.key, step) for metric in metrics)
        return bool(metrics)

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.log(record)

    def flush(self) -> None:
        """Each record went out as it came."""

    def finish(self, folder: Path, final: dict[str, Any]) -> None:
        for name in FILES:
            if (folder / name).is_file():
                self.client.log_artifact(self.run_id, str(folder / name))
        self.client.log_dict(self.run_id, final, "evaluation.json")
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        """The client holds no connection."""


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _find_run(client: Any, experiment: str, start: TrackerStart) -> str | None:
    """The run to go on with: the checkpoint's, else (a resumed run or a sync whose checkpoint
    has none: the server was down when the run began) the latest run of the same output."""
    from mlflow.exceptions import MlflowException

    if start.run_id:
        try:
            return client.get_run(start.run_id).info.run_id
        except MlflowException:  # another server than the run's: find it by its output
            pass
    if not start.resumed:
        return None
    quoted = start.output.replace("'", "\\'")
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.{OUTPUT_TAG} = '{quoted}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def _held(client: Any, run_id: str) -> tuple[set[tuple[str, int]], dict[str, str]]:
    """The (metric, step) pairs and the params the run holds."""
    data = client.get_run(run_id).data
    held = {
        (key, metric.step)
        for key in data.metrics
        for metric in client.get_metric_history(run_id, key)
    }
    return held, dict(data.params)


def _log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for first in range(0, len(items), 100):  # the REST API takes 100 params per request
        client.log_batch(run_id, params=items[first : first + 100])


def fresh_id() -> None:
    return None  # the server chooses


def open_run(config: Any, start: TrackerStart) -> MlflowTracker:
    return MlflowTracker(config, start)


def unreachable(config: Any, start: TrackerStart, error: BaseException) -> str:
    return (
        f"warning: MLflow at {tracking_uri(config)} cannot be reached ({short(error)}): the run "
        f"goes on without it, its metrics are in metrics.jsonl; `twins sync {start.output} "
        "--to mlflow` sends them later"
    )
