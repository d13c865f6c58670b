"""dlrun-predict RUN_DIR [INPUT ... | FILE]: answer new inputs with a trained run's best checkpoint.

With no INPUT it reads one input per line from stdin. One INPUT that is an
existing .csv, .tsv or .jsonl file is read as a table: the task takes its
inputs from the columns it needs, by header name (``inputs_from_table``).
Every task prints one line per input, ``input<TAB>prediction`` and
``<TAB>probability`` where there is one (the input as given: a text, a table's
row, an image's file name; tabs, newlines and other control characters in it
escaped as ``\\t``, ``\\n``...); an empty input is an error. ``--out FILE.csv``
writes the same as CSV (a file's rows with the prediction columns added). The task
and model are
rebuilt from the config saved in the run's checkpoint and its vocabularies,
read as data; inputs are normalized exactly as in training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from dlrun.api import load_model as load_run  # (task, model): the one loader, in dlrun.api
from dlrun.errors import OneLineParser, UserError, first_line, one_line_errors, printable

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
OUTPUT_COLUMNS = ("prediction", "probability")  # the fields of a task's prediction, in order


def read_input_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """A .csv/.tsv (header row) or .jsonl (one object per line) file as header and rows
    of strings; a JSON value that is not a string is written as JSON (null: empty)."""
    if path.suffix.lower() != ".jsonl":
        from dlrun.data.table import read_table

        table = read_table(path, text=True)  # every value as written
        return table.header, table.rows()
    header: dict[str, None] = {}
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not readable as UTF-8 text ({first_line(exc, 80)})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}, line {n}: expected a JSON object, one per line")
        header.update(dict.fromkeys(record))
        records.append(record)
    if not records:
        raise UserError(f"{path}: no JSON objects, one per line, in the file")

    def field(value) -> str:
        return "" if value is None else value if isinstance(value, str) else json.dumps(value)

    return list(header), [[field(r.get(k)) for k in header] for r in records]


def write_predictions(path: Path, header: list[str], rows: list[list[str]], predictions) -> None:
    """``rows`` (under ``header``) with each prediction's fields added as the columns
    ``prediction`` and ``probability`` (those it has), replacing columns of those names."""
    from dlrun.rundir.write import write_text_atomic

    fields = [p.split("\t") for p in predictions]
    added = list(OUTPUT_COLUMNS[: max([1, *map(len, fields)])])
    keep = [i for i, h in enumerate(header) if h not in added]
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow([header[i] for i in keep] + added)
    for row, f in zip(rows, fields, strict=True):
        out.writerow([row[i] for i in keep] + f)
    try:
        write_text_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"--out {path}: cannot write it ({first_line(exc, 80)})") from None


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="dlrun-predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by dlrun")
    parser.add_argument(
        "inputs",
        nargs="*",
        help="inputs, or one .csv/.tsv/.jsonl file of them; none: read one per line from stdin",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    parser.add_argument("--batch-size", type=int, default=1024, help="inputs per batch (>= 1)")
    parser.add_argument(
        "--out", type=Path, help="also write the inputs and predictions to this CSV file"
    )
    args = parser.parse_intermixed_args(argv)  # options may follow the inputs
    with one_line_errors("dlrun-predict"):
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
        if args.out is not None and args.out.suffix.lower() != ".csv":
            raise UserError(f"--out {args.out}: name a .csv file, e.g. --out predictions.csv")
        import torch

        from dlrun.engine.device import pick

        task, model = load_run(args.run_dir, pick(args.device))
        table = None
        if len(args.inputs) == 1 and Path(args.inputs[0]).suffix.lower() in TABLE_SUFFIXES:
            path = Path(args.inputs[0]).expanduser()
            if not path.is_file():
                raise UserError(f"{printable(args.inputs[0])}: no such file")
            if args.out is not None and args.out.expanduser().resolve() == path.resolve():
                raise UserError(f"--out {args.out}: that is the input file; name another file")
            table = read_input_table(path)
            inputs = task.inputs_from_table(*table, str(path))
        else:
            texts = [] if task.inputs_are_paths else args.inputs
            for given in texts:  # a file that is not one table: never read as a text
                named = os.path.expanduser(given)  # os.path: False for a text too long a name
                if (os.sep in given or Path(given).suffix) and os.path.exists(named):
                    kind = "folder" if os.path.isdir(named) else "file"
                    raise UserError(
                        f"{printable(given)}: a {kind}; give "
                        "one .csv, .tsv or .jsonl file of inputs (alone), or the inputs "
                        "themselves (or on stdin, one per line)"
                    )
            blank = [n for n, given in enumerate(args.inputs, 1) if not given.strip()]
            if blank:
                raise UserError(
                    f"input {blank[0]} of {len(args.inputs)} is empty: give each INPUT a "
                    "text, a row or a file to predict (blank lines on stdin are skipped)"
                )
            lines = args.inputs or [line.rstrip("\r\n") for line in sys.stdin]
            inputs = task.inputs_from_lines(lines)
        blank = [n for n, given in enumerate(inputs, 1) if not given.strip()]
        if blank:  # a table's empty cell: nothing to answer, not a question with an answer
            raise UserError(
                f"input {blank[0]} of {len(inputs)} is empty (an empty cell of "
                f"{printable(args.inputs[0])}?): fill it or leave the row out"
            )
        with torch.inference_mode():  # one call: the task batches, and sees every input
            predictions = task.predict(model, inputs, args.batch_size)
        if len(predictions) != len(inputs):  # a task's bug, not the user's
            raise RuntimeError(f"{len(inputs)} inputs gave {len(predictions)} predictions")
        for given, prediction in zip(inputs, predictions):
            # Fields stay TAB-separated; control characters inside a field are escaped.
            fields = [given, *prediction.split("\t")]
            print("\t".join(printable(f, 10_000) for f in fields))
        if args.out is not None:
            header, rows = table or (["input"], [[i] for i in inputs])
            write_predictions(args.out, header, rows, predictions)


if __name__ == "__main__":
    main()
