"""Your own table: classification or regression from a CSV or TSV file (seed 004).

``dataset.path`` is a CSV/TSV with a header row; ``dataset.target`` names the
label column and the features are the other columns (or ``dataset.features``).
Numeric columns are standardized with the training split's statistics, text
columns one-hot encoded with the training split's categories; both are saved
for prediction (``tabular.json``). A text column of mostly distinct values is
free text and refused (``task=text``), unless listed in ``dataset.categorical``.
Missing values are an error naming the row and column, or imputed
(``dataset.missing=mean``) or dropped (``drop``). ``task.problem=regression``
predicts a number (MSE or Huber loss; RMSE, MAE, R²; samples by error, a
predicted-against-true figure). ``dlrun-predict`` finds the features by header name.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.data.table import (
    Column,
    Encoder,
    Table,
    missing_message,
    number,
    read_table,
    row_fields,
    row_text,
    sorted_labels,
    split_indices,
    spread,
    summary,
    target_numbers,
    too_large,
)
from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json
from dlrun.rundir.write import write_json
from dlrun.tasks.base import encoding_problems, path_problems, split_problems
from dlrun.tasks.classify import ClassificationTask

PROBLEMS = ("classification", "regression")


@dataclass(frozen=True)
class TabularDataConfig(Named):
    path: str = spec()  # CSV or TSV with a header row
    test_path: str | None = spec()  # a separate test table with the same columns
    target: str | None = spec()  # the label (or value) column
    features: list[str] | None = spec()  # null: every other column
    categorical: list[str] = spec()  # feature columns one-hot encoded whatever their values
    delimiter: str | None = spec()  # null: detected (comma, tab, semicolon, pipe)
    missing: str = spec(choices=["error", "mean", "drop"])
    encoding: str = spec()
    val_fraction: float | None = spec(gt=0, lt=1)  # null: held_out_fractions
    test_fraction: float = spec(gt=0, lt=1)  # unused with test_path
    seed: int = spec(ge=0)
    batch_size: int = spec(ge=1)


TARGET_LIMIT = 1e150  # a regression target's largest size: its errors' squares fit float64
PLOTTED = 10_000  # rows of a table's picture (data.png): a sample of a large one


def keep_of(cfg: RunConfig) -> str:
    """The weights a run keeps: ``trainer.keep``, or under ``auto`` the weights where a
    classifier stopped ("last") and a regressor's best by validation MSE ("best")."""
    if cfg.trainer is not None and cfg.trainer.keep != "auto":  # None: a config check failed
        return cfg.trainer.keep
    return "best" if cfg.task.problem == "regression" else "last"


def held_out_fractions(cfg: RunConfig) -> TabularDataConfig:
    """``cfg.dataset`` with ``val_fraction`` null made a number: 0.05 when the run keeps
    its last weights (validation then only says when to stop, and the rows it spares
    train), 0.1 when validation also picks the checkpoint (BENCHMARKS.md, Tabular)."""
    d = cfg.dataset
    if d.val_fraction is not None:
        return d
    return replace(d, val_fraction=0.05 if keep_of(cfg) == "last" else 0.1)


# -- the task -------------------------------------------------------------------------------


@TASKS.register("tabular", schema=TabularDataConfig)
class TabularTask(ClassificationTask):
    model_kind = "tabular"
    problems = PROBLEMS
    metric_names = ("accuracy", "perplexity", "rmse", "mae", "r2")
    METRICS = {"classification": ("accuracy", "perplexity"), "regression": ("rmse", "mae", "r2")}

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.encoder: Encoder  # set by prepare or load
        self.target_stats = (0.0, 1.0)  # regression: training mean and std of the target
        # What prepare keeps of the table once its features are encoded (the data are then
        # held once, as the splits' tensors): the statistics of stats.json; the test rows as
        # read, aligned with the test split (samples show them); the numeric features and
        # labels of up to PLOTTED training rows (data.png).
        self.table_stats: dict[str, Any] = {}
        self.test_rows: Table
        self.plotted: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 0)), np.zeros(0))

    @property
    def regression(self) -> bool:
        return self.cfg.task.problem == "regression"

    @property
    def keep(self) -> str:
        """``trainer.keep=auto``: a classifier keeps the weights where early stopping
        ended it, since the cross-entropy of a small validation split rises with
        confidence while accuracy holds and picks an early, underfit checkpoint
        (BENCHMARKS.md, Tabular); a regressor keeps its best validation MSE."""
        return keep_of(self.cfg)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d, problem = cfg.dataset, cfg.task.problem or "classification"
        if d.target is None:
            problems.append("dataset.target: name the label column, e.g. dataset.target=label")
        listed = d.features or []
        twice = sorted({f for f in listed if listed.count(f) > 1})
        if twice:
            problems.append(f"dataset.features: {', '.join(twice)} listed twice; list each once")
        monitor = cfg.task.monitor.partition("/")[2]
        if monitor not in ("loss", *cls.METRICS[problem]):
            problems.append(
                f"task.monitor={cfg.task.monitor}: not a {problem} metric; choose one of "
                + ", ".join(f"val/{m}" for m in ("loss", *cls.METRICS[problem]))
            )
        held_out = ("val_fraction",) if d.test_path else ("val_fraction", "test_fraction")
        problems += split_problems(
            held_out_fractions(cfg), "rows", held_out
        )  # test_path: the table splits two ways
        if d.delimiter is not None and len(d.delimiter) != 1:
            problems.append(f"dataset.delimiter={d.delimiter!r}: must be one character")
        return problems + encoding_problems(d)

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d, fix = cfg.dataset, "give a CSV or TSV table with a header row"
        return path_problems("dataset.path", d.path, "file", fix) + path_problems(
            "dataset.test_path", d.test_path, "file", fix
        )

    # -- data ----------------------------------------------------------------------------
    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        # Class names and categorical features as written ("1.0" stays "1.0").
        text = (*d.categorical, *(() if self.regression else (d.target,)))
        table = read_table(Path(d.path).expanduser(), d.delimiter, d.encoding, text)
        table.index(d.target)
        features = d.features or [h for h in table.header if h != d.target]
        for name in features:
            table.index(name)
        if d.target in features:
            raise UserError(f"dataset.features: the target '{d.target}' is also a feature")
        for name in d.categorical:
            if name not in features:
                raise UserError(
                    f"dataset.categorical: '{printable(name)}' is not a feature column; "
                    f"the features are {', '.join(map(printable, features))}"
                )
        tables = dict.fromkeys(("train", "val", "test"), table)
        splits = split_indices(len(table), held_out_fractions(self.cfg))
        if d.test_path is not None:
            test = read_table(Path(d.test_path).expanduser(), d.delimiter, d.encoding, text)
            lacking = [c for c in (*features, d.target) if c not in test.header]
            if lacking:  # columns are found by name: their order and any others do not matter
                raise UserError(
                    f"{test.path}: no column {', '.join(repr(printable(c)) for c in lacking)}, "
                    f"which {table.path} has; the test table needs the features and the target"
                )
            tables["test"], splits["test"] = test, np.arange(len(test))
        if d.missing == "drop":
            for s, rows in splits.items():
                used = [tables[s].column(f).missing[rows] for f in (*features, d.target)]
                splits[s] = rows[~functools.reduce(np.logical_or, used)]
        for name, rows in splits.items():
            if not len(rows):
                raise UserError(
                    f"{table.path}: the {name} split is empty ({len(table)} rows); use a "
                    "larger table or other dataset.val_fraction / test_fraction"
                )
        self.encoder = Encoder.fit(
            table, splits["train"], features, d.missing == "mean", d.categorical
        )
        # A missing label is refused naming its line (target_numbers, _class_targets).
        if self.regression:
            y = {s: target_numbers(tables[s], d.target, rows) for s, rows in splits.items()}
            with np.errstate(over="ignore", invalid="ignore"):  # checked below
                mean = float(y["train"].mean(dtype=np.float64))  # float32's squares: 1e19
                std = spread(y["train"], mean)
            # The errors' squares (MSE, RMSE, R^2) must fit in float64 too: 1e150 at most.
            if not math.isfinite(std) or float(np.abs(y["train"]).max()) > TARGET_LIMIT:
                raise UserError(too_large(str(table.path), d.target, y["train"]))
            if std == 0:
                raise UserError(
                    f"{table.path}: column '{printable(d.target)}' is {y['train'][0]:.6g} in "
                    "every training row; regression needs a target that varies"
                )
            self.target_stats = (mean, std)
            targets = {s: torch.from_numpy(v.astype(np.float32)) for s, v in y.items()}
        else:
            targets = self._class_targets(tables, splits)
        # Before the features are encoded, while only the table holds the data: what the
        # run needs of the table later. Then the table goes (the tensors hold the data).
        features = self.encoder.features
        self.table_stats = summary(table, d.target, features, not self.regression)
        shown = splits["train"][:PLOTTED]  # training rows are in random order: a fair sample
        numeric = [f for f in features if f in self.encoder.numeric]
        self.plotted = (
            np.stack([table.column(f).numbers[shown] for f in numeric], axis=1)
            if numeric
            else np.zeros((len(shown), 0)),
            targets["train"][:PLOTTED].numpy().copy(),  # not a view that keeps them all
        )
        # The encoder reads the features only: the other columns (the target's) go first.
        tables = {s: t.select(features) for s, t in tables.items()}
        del table
        self.test_rows = tables["test"].take(splits["test"])
        for s, rows in splits.items():
            self.splits[s] = {"x": self.encoder.encode(tables[s], rows), "label": targets[s]}

    def _class_targets(
        self, tables: dict[str, Table], splits: dict[str, np.ndarray]
    ) -> dict[str, torch.Tensor]:
        """Each split's class indices; the classes are the training split's labels."""
        target = self.cfg.dataset.target
        coded = {s: tables[s].column(target).coded() for s in splits}
        for s, rows in splits.items():
            missing = tables[s].column(target).missing[rows]
            if missing.any():
                where = tables[s].where(rows[missing.argmax()])
                raise UserError(missing_message(where, target, target=True))
        values, codes = coded["train"]
        self.classes = tuple(sorted_labels({values[c] for c in np.unique(codes[splits["train"]])}))
        index = {c: k for k, c in enumerate(self.classes)}
        targets = {}
        for s, rows in splits.items():
            values, codes = coded[s]
            lookup = np.array([index.get(v, -1) for v in values] + [-1])
            y = lookup[codes[rows]]
            if (y < 0).any():
                i = rows[(y < 0).argmax()]
                hint = ""
                numbers = [number(v) for v in values]
                found = [v for v in numbers if v is not None]
                if len(found) == len(numbers) and (  # a value to predict, most likely
                    len(found) > 20 or not all(v.is_integer() for v in found)
                ):
                    hint = (
                        f"; column '{printable(target)}' holds {len(values):,} distinct "
                        "numbers: to predict a number, add task.problem=regression"
                    )
                raise UserError(
                    f"{tables[s].where(i)}: label '{printable(values[codes[i]], 40)}' never "
                    "occurs in the training split" + hint
                )
            targets[s] = torch.from_numpy(y)
        if len(self.classes) < 2:
            raise UserError(
                f"{tables['train'].path}: column '{target}' has one class in training; "
                "classification needs two or more (task.problem=regression for numbers)"
            )
        return targets

    def stats(self) -> dict[str, Any]:
        """Per split sizes, then the table's column statistics, classes and correlations."""
        out: dict[str, Any] = {name: {"examples": self.size(name)} for name in self.splits}
        out.update(self.table_stats)
        return out

    def save(self, run: RunDir) -> None:
        state = {
            "encoder": asdict(self.encoder),
            "classes": list(self.classes),
            "target_stats": list(self.target_stats),
        }
        write_json(run.file("tabular.json"), state)

    def load(self, run: RunDir) -> None:
        path = run.file("tabular.json")
        state = read_json(path)
        try:
            enc = state["encoder"]
            self.encoder = Encoder(
                [str(f) for f in enc["features"]],
                {str(k): (float(m), float(s)) for k, (m, s) in enc["numeric"].items()},
                {str(k): [str(c) for c in v] for k, v in enc["categories"].items()},
                bool(enc["impute"]),
            )
            self.classes = tuple(str(c) for c in state["classes"])
            mean, std = state["target_stats"]
            self.target_stats = (float(mean), float(std))
            known = all(
                f in self.encoder.numeric or f in self.encoder.categories
                for f in self.encoder.features
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            known = False
        if not known:
            raise UserError(f"{path}: not a dlrun tabular description (damaged?)")

    def describe(self, split: str, i: int) -> str:
        """A test row's features as read; other splits' rows by number (their table is not
        kept once encoded)."""
        if split != "test":
            return f"#{i}"
        return ",".join(self.test_rows.row(i, self.encoder.features))

    # -- model, loss, metrics ----------------------------------------------------------------
    def vocabularies(self) -> dict[str, list[str]]:
        enc = self.encoder
        categories = {f"categories of {k}": list(v) for k, v in enc.categories.items()}
        return {"features": list(enc.features), **categories, "classes": list(self.classes)}

    def build_model(self) -> nn.Module:
        outputs = 1 if self.regression else len(self.classes)
        return build_model(self.cfg.model, inputs=self.encoder.width, outputs=outputs)

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    def _regression_loss(self, model, batch, reduction: str = "mean") -> torch.Tensor:
        mean, std = self.target_stats
        pred = model(batch["x"])[:, 0].float()
        target = (batch["label"] - mean) / std
        m = self.cfg.model
        if m.loss == "huber":
            return F.huber_loss(pred, target, delta=m.delta, reduction=reduction)
        return F.mse_loss(pred, target, reduction=reduction)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (
            self._regression_loss(model, batch) if self.regression else super().loss(model, batch)
        )

    def eval_sums(
        self, model: nn.Module, batch: dict[str, torch.Tensor], split: str
    ) -> dict[str, torch.Tensor]:
        if not self.regression:
            return super().eval_sums(model, batch, split)
        mean, std = self.target_stats
        y = batch["label"].double()
        err = (model(batch["x"])[:, 0].double() * std + mean) - y
        return {
            "loss": self._regression_loss(model, batch, reduction="sum").double(),
            "sse": (err**2).sum(),
            "sae": err.abs().sum(),
            "y": y.sum(),
            "yy": (y**2).sum(),
            "count": torch.tensor(y.numel(), dtype=torch.float64, device=y.device),
        }

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        if not self.regression:
            return super().metrics(totals)
        s = {k: float(v) for k, v in totals.items()}
        n = max(s["count"], 1.0)
        total = s["yy"] - s["y"] ** 2 / n
        return {
            "loss": s["loss"] / n,
            "rmse": math.sqrt(s["sse"] / n),
            "mae": s["sae"] / n,
            "r2": 1 - s["sse"] / total if total > 0 else 0.0,
        }

    def _values(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.target_stats
        return model(x)[:, 0].float() * std + mean

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        if not self.regression:
            return super().samples(model, split, n)
        if n == 0 or split not in self.splits:
            return []
        pred = self._values(model, self.splits[split]["x"]).cpu()
        target = self.splits[split]["label"].cpu()
        order = torch.argsort((pred - target).abs(), descending=True)[:n].tolist()
        return [
            {
                "error": f"{float(pred[i] - target[i]):+.6g}",
                "source": self.describe(split, i),
                "target": f"{float(target[i]):.6g}",
                "prediction": f"{float(pred[i]):.6g}",
            }
            for i in order
        ]

    def report(self, model: nn.Module, run: RunDir) -> None:
        from dlrun.engine.plots import (
            plot_decision_boundary,
            plot_predicted_vs_true,
            plot_table,
        )

        if self.regression:
            for split in self.test_splits:
                plot_predicted_vs_true(
                    self.splits[split]["label"].cpu(),
                    self._values(model, self.splits[split]["x"]).cpu(),
                    self.cfg.dataset.target,
                    run.file(f"predicted_vs_true_{split}.png"),
                    f"{split}: predicted against true {self.cfg.dataset.target}",
                )
        else:
            super().report(model, run)
        numeric = [f for f in self.encoder.features if f in self.encoder.numeric]
        values, labels = self.plotted  # the training split's first rows as prepared
        if numeric:
            colours = None if self.regression else torch.from_numpy(labels)
            target = (self.cfg.dataset.target, labels) if self.regression else None
            plot_table(numeric, values, colours, self.classes, run.file("data.png"), target)
        if len(self.encoder.features) == 2 and len(numeric) == 2 and not self.regression:
            split, table = "test", self.test_rows
            n = self.size(split)  # debug limits may have cut the split
            points = torch.from_numpy(np.stack([table.column(f).numbers[:n] for f in numeric], 1))
            x = self.splits[split]["x"]
            pred = model(x).argmax(1).cpu()
            known = ~points.isnan().any(1)  # a point with a missing (imputed) value has no place

            def classify(grid: torch.Tensor) -> torch.Tensor:
                columns = [Column(c.double().numpy(), np.zeros(len(c), dtype=bool)) for c in grid.T]
                table = Table(None, numeric, columns, ",", label="grid point")
                encoded = self.encoder.encode(table, np.arange(len(grid))).to(x.device)
                return model(encoded).argmax(1).cpu()

            if known.any():
                plot_decision_boundary(
                    classify,
                    points[known],
                    self.splits[split]["label"].cpu()[known],
                    pred[known],
                    self.classes,
                    numeric,
                    run.file("decision_boundary.png"),
                    f"decision regions and the {split} points (errors marked x)",
                )

    # -- prediction ------------------------------------------------------------------------
    def inputs_from_lines(self, lines: list[str]) -> list[str]:
        """Typed rows; a first row naming every feature is a header (any order, more
        columns allowed), and the rows under it are matched to it by name."""
        lines = super().inputs_from_lines(lines)
        header = row_fields(lines[0]) if lines else []
        if set(self.encoder.features) <= set(header):
            rows = [row_fields(line, len(header)) for line in lines[1:]]
            return self.inputs_from_table(header, rows, "stdin")
        return lines

    def inputs_from_table(self, header: list[str], rows: list[list[str]], source: str) -> list[str]:
        """Each row's features, found by column name in any order; other columns (the
        target among them) are ignored."""
        features = self.encoder.features
        missing = [f for f in features if f not in header]
        if missing:
            target = self.cfg.dataset.target
            raise UserError(
                f"{source}: no column {', '.join(repr(printable(f)) for f in missing)}; this "
                f"run's model reads {', '.join(map(printable, features))} (by header name, "
                f"in any order; '{printable(target)}' and other columns are ignored)"
            )
        index = [header.index(f) for f in features]
        for n, row in enumerate(rows, 1):
            if len(row) != len(header):
                raise UserError(
                    f"{source}, row {n}: {len(row)} values, the header has {len(header)}"
                )
        return [row_text([row[i] for i in index]) for row in rows]

    def predict(self, model: nn.Module, inputs: list[str], batch_size: int) -> list[str]:
        """``label<TAB>probability`` (classification) or the value (regression) per input,
        a row of the features' values in the run's order (``inputs_from_table``)."""
        features = self.encoder.features
        parsed = []
        for i, row in enumerate(inputs, 1):  # one line, one row: no file around them
            values = row_fields(row, len(features))
            if len(values) != len(features):
                raise UserError(
                    f"input {i}: {len(values)} values, expected {len(features)} "
                    f"({', '.join(features)}), comma-separated"
                )
            parsed.append(values)
        table = Table.from_rows(features, parsed, "input")
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(parsed), batch_size):
            chunk = np.arange(start, min(start + batch_size, len(parsed)))
            x = self.encoder.encode(table, chunk).to(device)
            if self.regression:
                out += [f"{v:.6g}" for v in self._values(model, x).tolist()]
            else:
                p, label = torch.softmax(model(x).float(), 1).max(1)
                out += [f"{self.classes[c]}\t{q:.4f}" for c, q in zip(label.tolist(), p.tolist())]
        return out
