"""dlrun-export: safetensors weights, ONNX and torch.export programs whose outputs equal
dlrun's own on the same inputs, for every task (issue 27, item 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_cfg

from dlrun.api import load_model
from dlrun.cli.export import CONFIG, export, forward_inputs, main
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.config import validate
from dlrun.registry import list_tasks, task_entry
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json

SEQUENCE = {"dates", "algebra", "text_pairs"}  # a decoding loop: safetensors only


def image_files(folder: Path, n: int, mode: str) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"x{i}.png"
        Image.new(mode, (20 + 3 * i, 24), color=(40 * i) % 255 if mode == "L" else None).save(path)
        paths.append(str(path))
    return paths


def examples(task: str, folder: Path) -> tuple[list[str], list[str]]:
    """Inputs to trace on, and others (more of them, other lengths) to compare on."""
    if task == "tabular":
        return ["1,-1,round"], ["-1,-1,round", "1,-1,square", "0,1,flat", "0.5,0.2,other"]
    if task in ("kmnist", "images"):
        files = image_files(folder, 4, "L" if task == "kmnist" else "RGB")
        return files[:1], files[1:]
    return ["a fine film"], ["dull and slow, a waste", "wonderful", "the plot of the film", "x"]


@pytest.fixture(scope="module", params=list_tasks())
def trained(request, tmp_path_factory, cache_dir, corpora) -> tuple[str, Path]:
    task = request.param
    folder = tmp_path_factory.mktemp(f"export_{task}")
    run(make_cfg(cache_dir, f"task={task}", "trainer.max_steps=4"), folder)
    return task, folder


def outputs(model, args, kwargs) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(*args, **kwargs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def test_safetensors_with_config_and_vocabularies_rebuild_the_model(trained, tmp_path):
    """The export folder alone (no checkpoint, no pickle) gives the same predictions."""
    from safetensors.torch import load_file

    task_name, run_dir = trained
    target = export(run_dir, "safetensors", tmp_path / "out")
    assert target == tmp_path / "out" / "model.safetensors"
    data = validate(read_json(tmp_path / "out" / CONFIG), check_data=False)
    fresh = task_entry(data.task.name).obj(data)
    fresh.load(RunDir(tmp_path / "out"))
    model = fresh.build_model()
    model.load_state_dict(load_file(target))
    model.eval()
    task, original = load_model(run_dir)
    _, inputs = examples(task_name, tmp_path / "inputs")
    with torch.inference_mode():
        assert fresh.predict(model, inputs, 8) == task.predict(original, inputs, 8)


@pytest.mark.parametrize("fmt", ["onnx", "torch.export"])
def test_exported_programs_answer_as_the_model_does(trained, fmt, tmp_path):
    task_name, run_dir = trained
    trace, inputs = examples(task_name, tmp_path / "inputs")
    if task_name in SEQUENCE:
        with pytest.raises(UserError, match="export it with --format safetensors"):
            export(run_dir, fmt, tmp_path / "out", trace)
        return
    target = export(run_dir, fmt, tmp_path / "out", trace)
    assert (tmp_path / "out" / CONFIG).is_file()
    task, model = load_model(run_dir)
    args, kwargs = forward_inputs(task, model, inputs)  # other sizes than the trace's
    expected = outputs(model, args, kwargs)
    if fmt == "torch.export":
        got = outputs(torch.export.load(str(target)).module(), args, kwargs)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        given = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        names = [i.name for i in session.get_inputs()]
        assert len(names) == len(given)
        got = [torch.from_numpy(o) for o in session.run(None, dict(zip(names, given_np(given))))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e.float(), rtol=1e-4, atol=1e-5)


def given_np(tensors: list[torch.Tensor]) -> list:
    return [t.numpy() for t in tensors]


def test_mistakes_are_one_line(cache_dir, corpora, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run(make_cfg(cache_dir, "task=tabular", "trainer.max_steps=2"), run_dir)
    with pytest.raises(SystemExit) as info:
        main([str(run_dir), "--format", "onnx"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--example" in err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "none"), "--format", "safetensors"])
    assert "no such run directory" in capsys.readouterr().err
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="a run directory; its files would be replaced"):
        export(run_dir, "safetensors", run_dir)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(SystemExit):
        main([str(run_dir), "--format", "onnx", "--example", "1,1"])
    assert "input 1: 2 values, expected 3" in capsys.readouterr().err
    main([str(run_dir), "--format", "torch.export", "--example", "1,1,flat"])
    assert (RunDir(run_dir).export / "model.pt2").is_file()
    assert "wrote" in capsys.readouterr().out
