"""Streaming data (issue 20): samples read from the file batch by batch give what the in-memory
cache gives: the same tensors, the same normaliser (one float64 pass, chunks combined), the same
epoch order, hence bit-identical weights; evaluation streams too; precision and compile options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sciml import datasets, runs
from sciml.errors import ConfigError, ModelError
from sciml.training import stream, train
from sciml.training.data import load_grid_data
from sciml.training.normalisers import DataNormaliser

TINY_FNO = {"modes": [4, 4], "width": 8, "n_layers": 2, "projection": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    train_path = datasets.generate("darcy", n=37, resolution=16, seed=0, out=root / "train.h5", progress=False)
    test_path = datasets.generate("darcy", n=11, resolution=16, seed=1, out=root / "test.h5", progress=False)
    return train_path, test_path


@pytest.fixture(scope="module")
def staggered(tmp_path_factory):
    """ConDiff: its coefficient lives on cell centres and is interpolated onto the nodes when read."""
    out = tmp_path_factory.mktemp("stream") / "condiff.h5"
    return datasets.generate("condiff", n=9, resolution=16, seed=0, out=out, progress=False)


def test_streamed_reads_equal_the_cached_tensors_in_any_order(data, staggered):
    for path in (data[0], staggered):
        cached = load_grid_data(path)
        streamed = stream.open_samples(path, cache_gb=0)
        assert isinstance(streamed, stream.FileSamples) and not streamed.cached
        assert streamed.signature == cached.signature and len(streamed) == len(cached)
        idx = torch.randperm(len(cached), generator=torch.Generator().manual_seed(1))[:7]
        x, y = streamed.read(idx)
        assert torch.equal(x, cached.x[idx]) and torch.equal(y, cached.y[idx])
        part = streamed.subset(3, 8)
        x, y = part.read(torch.tensor([4, 0]))
        assert torch.equal(x, cached.x[[7, 3]]) and torch.equal(y, cached.y[[7, 3]])
    # within the budget the samples are cached
    assert isinstance(stream.open_samples(data[0]), stream.MemorySamples)


def test_loader_workers_deliver_the_batches_in_order(data):
    streamed = stream.open_samples(data[0], cache_gb=0)
    cached = load_grid_data(data[0])
    batches = list(torch.randperm(37, generator=torch.Generator().manual_seed(2)).split(5))
    state = torch.get_rng_state()
    got = list(stream.iterate(streamed, batches, workers=2))
    assert torch.equal(torch.get_rng_state(), state)  # the loader leaves the global RNG alone
    assert len(got) == len(batches)
    for idx, (x, y) in zip(batches, got):
        assert torch.equal(x, cached.x[idx]) and torch.equal(y, cached.y[idx])


@pytest.mark.parametrize("kind", ["pointwise", "global"])
def test_one_pass_normaliser_equals_the_in_memory_statistics(data, kind):
    cached = load_grid_data(data[0])
    reference = DataNormaliser.fit(kind, cached.x, cached.y)  # two passes over the whole tensor
    for chunk in (4, 256):  # 10 chunks combined, or one
        fitted = stream.fit_normaliser(kind, stream.open_samples(data[0], cache_gb=0), workers=0, chunk=chunk)
        for a, b in ((fitted.inputs, reference.inputs), (fitted.outputs, reference.outputs)):
            assert a.mean.shape == b.mean.shape
            torch.testing.assert_close(a.mean, b.mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(a.std, b.std, rtol=1e-6, atol=1e-7)
    # and the chunk combination is exact against float64 numpy on one grid point
    x = cached.x[:, 0, 5, 7].double().numpy()
    fitted = stream.fit_normaliser("pointwise", cached, chunk=3)
    assert abs(float(fitted.inputs.mean[0, 5, 7]) - x.mean()) < 1e-6 * abs(x.mean())
    assert abs(float(fitted.inputs.std[0, 5, 7]) - x.std(ddof=1)) < 1e-6 * x.std(ddof=1)


def test_epoch_order_is_randperm_for_our_files_and_a_permutation_for_blocked_files():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(stream.epoch_order(50, g(), block=1), torch.randperm(50, generator=g()))
    order = stream.epoch_order(103, g(), block=8, batch_size=4)
    assert sorted(order.tolist()) == list(range(103))
    assert not torch.equal(order, torch.arange(103))
    # windows of 2 blocks (4 batches of 4 samples), shuffled inside: a batch reads from one window,
    # or two where it straddles their border
    for batch in order.split(4):
        assert len(set((batch // 8).tolist())) <= 4
    first = set((order[:16] // 8).tolist())
    assert len(first) == 2 and sorted(order[:16].tolist()) == sorted(i for b in first for i in range(8 * b, 8 * b + 8))


def _weights(run):
    return load_file(run / "weights.safetensors")


@pytest.fixture(scope="module")
def cached_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cached"
    train("fno", data=data[0], test_data=data[1], out=out, model_config=TINY_FNO, epochs=3, batch_size=8,
          val_fraction=0.2, seed=4, progress=False, figures=False)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_gives_bit_identical_weights(data, cached_run, tmp_path, workers):
    out = tmp_path / f"streamed{workers}"
    result = train("fno", data=data[0], test_data=data[1], out=out, model_config=TINY_FNO, epochs=3, batch_size=8,
                   val_fraction=0.2, seed=4, progress=False, figures=False, cache_gb=0, workers=workers)
    a, b = _weights(cached_run), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = lambda r: [{k: v for k, v in row.items() if k != "seconds"} for row in  # noqa: E731
                      runs.read_metrics(r)]
    assert rows(out) == rows(cached_run)
    assert result["n_train"] == 30


def test_evaluate_streams_and_scores_as_the_cached_path(data, cached_run, monkeypatch, tmp_path):
    import importlib

    ev = importlib.import_module("sciml.evaluation.evaluate")

    cached = ev.evaluate(cached_run, data[1], out=tmp_path / "a.json", n_solver_samples=0)["datasets"][0]
    opened = []
    real = stream.open_samples

    def spy(*args, **kw):
        opened.append(real(*args, **kw))
        return opened[-1]

    monkeypatch.setattr(ev, "EVAL_CACHE_GB", 0.0)
    monkeypatch.setattr(ev, "open_samples", spy)
    streamed = ev.evaluate(cached_run, data[1], out=tmp_path / "b.json", batch_size=3, n_solver_samples=0)["datasets"][0]
    assert isinstance(opened[0], stream.FileSamples)
    for key in ("rel_l2_mean", "rel_l2_std", "rel_l2_max", "rel_l2_median"):
        assert streamed[key] == pytest.approx(cached[key], rel=1e-6, abs=0), key
    assert streamed["n"] == cached["n"] == 11


def test_bf16_training_runs_and_stays_near_fp32(data, cached_run, tmp_path):
    result = train("fno", data=data[0], test_data=data[1], out=tmp_path / "bf16", model_config=TINY_FNO, epochs=3,
                   batch_size=8, val_fraction=0.2, seed=4, progress=False, figures=False, precision="bf16")
    fp32 = runs.read_metrics(cached_run)[-1]["test_loss"]
    assert np.isfinite(result["test_loss"])
    assert abs(result["test_loss"] - fp32) < 0.1 * fp32  # same training, lower precision forward pass
    assert result["test_loss"] != fp32  # autocast really ran in bf16
    with pytest.raises(ConfigError, match=r"'precision' in training options must be one of \['fp32', 'bf16', 'fp16'\], got 'fp8'"):
        train("fno", data=data[0], out=tmp_path / "bad", model_config=TINY_FNO, epochs=1, precision="fp8", progress=False)


def test_a_model_that_cannot_compile_is_one_clear_error(data, tmp_path, monkeypatch):
    def broken(module, **kw):
        def run(x):
            raise RuntimeError("backend 'inductor' failed: no C++ compiler\nmore lines")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(ModelError, match=r"torch.compile cannot compile this model here \(RuntimeError: backend "
                                         r"'inductor' failed: no C\+\+ compiler\); train without --compile$"):
        train("fno", data=data[0], out=tmp_path / "c", model_config=TINY_FNO, epochs=1, progress=False,
              figures=False, compile=True)


def test_cli_streaming_options_and_bad_values(data, tmp_path, capsys):
    from sciml.cli.app import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", "fno", "--data", str(data[0]), "--out", str(tmp_path / "r"), "--epochs", "1",
              "--set", "modes=[4,4]", "--set", "width=8", "--workers", "-1", "--no-progress"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: training option 'workers' must be an integer >= 0 (or null for "
                                               "automatic), got -1")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "fno", "--data", str(data[0]), "--out", str(tmp_path / "r2"), "--epochs", "1",
              "--set", "modes=[4,4]", "--set", "width=8", "--cache-gb", "0", "--workers", "1", "--precision", "bf16",
              "--no-progress", "--option", "figures=false"])
    assert exit_.value.code == 0
    assert (tmp_path / "r2" / "weights.safetensors").exists()


@pytest.mark.parametrize("stop_after", [6, 8])  # epoch 2 batch 2 (inside an epoch), epoch 2's last batch
def test_a_job_signal_inside_an_epoch_saves_that_batch_and_resume_is_bit_identical(data, cached_run, tmp_path,
                                                                                   monkeypatch, stop_after):
    import os
    import signal

    from sciml.errors import Preempted
    from sciml.training import checkpoint as ckpt
    from sciml.training import trainer

    real, seen = trainer.iterate, [0]

    def iterate(samples, batches, workers=None):  # SIGUSR1 to this process after a given number of batches
        for item in real(samples, batches, workers):
            if len(batches) == 4:  # the batches of a training epoch (30 samples, batch 8)
                seen[0] += 1
                if seen[0] == stop_after:
                    os.kill(os.getpid(), signal.SIGUSR1)
            yield item

    monkeypatch.setattr(trainer, "iterate", iterate)
    out = tmp_path / "stopped"
    kw = dict(test_data=data[1], model_config=TINY_FNO, epochs=3, batch_size=8, val_fraction=0.2, seed=4,
              progress=False, figures=False)
    with pytest.raises(Preempted, match=rf"stopped by SIGUSR1 (at epoch 2, batch 2 of 4|after epoch 2 of 3); the state "
                                        rf"is saved in {out}: continue with `sciml train --resume {out}`"):
        train("fno", data=data[0], out=out, cache_gb=0, workers=2, **kw)
    state = ckpt.load_train_state(out)
    assert (state["epoch"], state.get("step")) == ((1, 2) if stop_after == 6 else (2, None))
    monkeypatch.setattr(trainer, "iterate", real)
    train("fno", out=out, resume=True, progress=False)
    a, b = _weights(cached_run), _weights(out)
    for k in a:
        assert torch.equal(a[k], b[k]), k
