"""The training loop's CSV log keeps the header it was started with when a resumed run reports
other columns (train/loop.append_log_row)."""
from __future__ import annotations

import csv

from gmm_perception.train.loop import append_log_row


def test_a_resumed_run_with_other_columns_writes_under_the_first_header(tmp_path):
    path = tmp_path / "log.csv"
    append_log_row(path, {"epoch": 1, "val_loss": 0.5, "val_dsm": 1.0})
    append_log_row(path, {"epoch": 2, "val_loss": 0.4, "val_dsm": 0.9})
    # newer code: a new column first, one column gone
    append_log_row(path, {"val_new": 7.0, "epoch": 3, "val_loss": 0.3})
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["epoch", "val_loss", "val_dsm"], ["1", "0.5", "1.0"], ["2", "0.4", "0.9"],
                    ["3", "0.3", ""]]
