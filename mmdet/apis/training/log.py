"""Training log records: text lines through the logger, json lines into `<timestamp>.log.json`."""

import json
import logging
from pathlib import Path

import numpy as np


def format_values(values: dict[str, float]) -> str:
    """`name: value` pairs with four decimals, comma separated."""
    return ", ".join(f"{name}: {value:.4f}" for name, value in values.items())


class TrainLog:
    """Writes each record as a text line through `logger` and, on rank 0, as a json line into
    `<work_dir>/<timestamp>.log.json`."""

    def __init__(self, work_dir: Path, timestamp: str, logger: logging.Logger, rank: int):
        self.logger = logger
        self.json_path = work_dir / f"{timestamp}.log.json" if rank == 0 else None

    def write(self, record: dict, text: str) -> None:
        """Log `text`; append `record` as one json line (rank 0)."""
        self.logger.info(text)
        if self.json_path is not None:
            with self.json_path.open("a") as json_file:
                json_file.write(json.dumps(record, sort_keys=True) + "\n")


class LogWindow:
    """The values logged since the last record, averaged when the record is written."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = {}

    def add(self, values: dict[str, float]) -> None:
        """Keep one iteration's values."""
        for name, value in values.items():
            self._values.setdefault(name, []).append(value)

    def pop_averages(self) -> dict[str, float]:
        """The mean of each value since the last call, in the order the names first appeared; empties the window."""
        averages = {name: float(np.mean(values)) for name, values in self._values.items()}
        self._values = {}
        return averages
