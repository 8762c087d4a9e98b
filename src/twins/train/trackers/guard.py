"""A tracker that stops answering warns once and is left alone; the run goes on, and
metrics.jsonl keeps everything for `twins sync`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twins.train.trackers.interface import Tracker, short


class Guarded:
    """`tracker`, whose failures become one warning line (through `say`) and its end."""

    def __init__(self, tracker: Tracker, output: str, say: Callable[[str], None]) -> None:
        self.tracker, self.output, self.say = tracker, output, say
        self.name, self.run_id = tracker.name, tracker.run_id
        self.down = False

    def _call(self, method: str, *args: Any) -> Any:
        if self.down:
            return False
        try:
            return getattr(self.tracker, method)(*args)
        except Exception as error:  # a tracker down must not stop the run or lose a checkpoint
            self.down = True
            later = (
                f"; `twins sync {self.output} --to {self.name}` sends what it lacks later"
                if self.name != "tensorboard"
                else ""
            )
            self.say(
                f"warning: {self.name} stopped taking metrics ({short(error)}): the run goes "
                f"on without it, its metrics are in metrics.jsonl{later}"
            )
            return False

    def log(self, record: dict[str, Any]) -> bool:
        return self._call("log", record)

    def catch_up(self, records: list[dict[str, Any]]) -> None:
        self._call("catch_up", records)

    def flush(self) -> None:
        self._call("flush")

    def finish(self, folder: Path, final: dict[str, Any]) -> None:
        self._call("finish", folder, final)

    def close(self) -> None:
        self._call("close")
