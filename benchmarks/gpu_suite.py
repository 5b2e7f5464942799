"""The numbers only a GPU can give (issue 22), as one resumable run with a time budget.

Parts, in order of priority; each runs in its own process, writes its files to ``OUT/<part>/`` as
soon as it finishes and is recorded in ``OUT/suite.json``, so a rerun with the same ``--out`` skips
the finished parts. A part whose estimated time does not fit in what is left of ``--budget``
is listed as not run; a part still running when the budget is spent is stopped and listed as
stopped. ``OUT/README.md`` is rewritten after every part.

  generation   Darcy 421^2: samples/s of ``generate(device="cuda")`` (batched multigrid-PCG)
               against the CPU path of the same code (serial, and one Dask worker per core);
               inputs bitwise equal, outputs to the solve tolerance (1e-10). Goal >= 100 samples/s.
  multigrid    ``benchmarks/multigrid.py`` on the GPU: PCG-MG setup and solve at 512^2, 1024^2,
               2048^2 (Poisson, Darcy, ConDiff variance 2.0) and pyamg's hierarchy cycled on the
               GPU; the host solvers up to 1024^2. Goal: solve <= 30 ms at 1024^2 Poisson.
  nmg          ``benchmarks/precond.py``: the neural multigrid (1 and 2 learned stages) against
               PCG-MG on the same GPU at 512^2 and 1024^2, Darcy and ConDiff variance 2.0 (~1e5),
               best of 2 solves. Goal <= 1.0x PCG-MG's wall time. Networks from
               ``--precond-runs`` (trained there, on this device, if missing).
  fno-speed    ``benchmarks/fno_speed.py``: one FNO training step, fp32 / bf16 / torch.compile,
               against neuraloperator's fp32 step. Goal <= 0.7x.
  precond-old  ``benchmarks/precond.py``: HINTS and FCG with the MgNO preconditioner at 512^2 (Darcy,
               ConDiff variance 2.0) against PCG-MG on the same GPU (networks from
               ``--precond-runs``, trained there if missing).
  zoo-*        ``benchmarks/zoo.py`` full-protocol cells (500 epochs), most valuable first: FNO
               Burgers s=1024 (paper 0.0160), LSM and MgNO Darcy s=85 (LSM paper 0.0065), U-Net and
               DeepONet Darcy, U-Net ConDiff-64 Poisson / cubic. Data in ``--zoo-work``/data, made
               there if missing (linear PDEs with batched solves on the GPU); the table of every
               finished cell is ``OUT/zoo.md``.

``--quick`` runs every part at CPU size (about 5 minutes on 2 cores) into ``--out`` (default
``benchmarks/results/gpu-suite-quick``); without it the default is
``benchmarks/measured/<gpu>-<date>``. On the device machine (wheels of the packages its image
lacks carried in ``.whl/``)::

    python benchmarks/gpu_suite.py --prepare          # on a CPU first: networks and zoo data to carry
    python benchmarks/gpu_suite.py --budget 515 [--out DIR] [--parts generation,multigrid]
    python benchmarks/gpu_suite.py --quick            # every part at CPU size

``benchmarks/gpu_suite_device.sh`` is the whole device command (wheels, install, the run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402  (benchmarks/zoo.py: its cells' data and table)


@dataclass(frozen=True)
class Part:
    """One step of the suite: ``command(args, folder)`` gives the argv of its process (run from the
    repository root), ``estimate`` its expected seconds on an H100-class GPU (full) or 2 CPU
    cores (quick), ``collect(args, folder)`` copies results made elsewhere into ``folder``."""

    name: str
    what: str
    estimate: tuple[float, float]  # (full, quick) seconds
    command: object
    collect: object = None


# ------------------------------------------------------------------------------------ part a


def generation_part(folder: Path, quick: bool, device: str) -> dict:
    """Samples/s of the batched generation on ``device`` against the CPU path; agreement."""
    import numpy as np

    from sciml import datasets
    from sciml.datasets.generators import create

    s, n_dev, n_cpu, n_workers = (65, 48, 8, 24) if quick else (421, 512, 16, 256)
    workers = 2 if quick else (os.cpu_count() or 2)
    gen = create("darcy", resolution=s)
    gen.sample(0, 0)  # warm-up: imports, caches
    gen.samples(0, [0, 1], device=device)
    work = folder / "tmp"
    work.mkdir(parents=True, exist_ok=True)

    def timed(n: int, **kw) -> float:
        path = work / "darcy.h5"
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        datasets.generate("darcy", n=n, resolution=s, seed=0, out=path, progress=False, **kw)
        return time.perf_counter() - t0

    t_dev = timed(n_dev, device=device)
    t_cpu = timed(n_cpu, workers=1)
    try:
        t_workers = timed(n_workers, workers=workers)
    except Exception as exc:  # noqa: BLE001  (no dask on the machine: reported, not fatal)
        t_workers, workers_error = float("nan"), f"{type(exc).__name__}: {exc}"[:200]
    else:
        workers_error = ""
    shutil.rmtree(work, ignore_errors=True)

    # agreement on the first samples: inputs bitwise, outputs to the solver tolerance
    k = 8
    host = [gen.sample(0, i) for i in range(k)]
    batched = gen.samples(0, list(range(k)), device=device)
    bitwise = all(np.array_equal(h[0][v], d[0][v]) for h, d in zip(host, batched) for v in gen.inputs)
    diff = max(float(np.max(np.abs(h[0][v] - d[0][v])) / np.max(np.abs(h[0][v])))
               for h, d in zip(host, batched) for v in gen.outputs)
    residual = max(d[1].residual for d in batched)
    result = {
        "resolution": s, "device": device, "tol": gen.config.tol, "cpu_method": host[0][1].method,
        "device_samples": n_dev, "device_s": t_dev, "device_per_s": n_dev / t_dev,
        "cpu_samples": n_cpu, "cpu_s": t_cpu, "cpu_per_s": n_cpu / t_cpu,
        "workers": workers, "workers_samples": n_workers, "workers_s": t_workers, "workers_per_s": n_workers / t_workers,
        "workers_error": workers_error, "inputs_bitwise": bitwise, "max_rel_diff_outputs": diff,
        "max_residual_device": residual, "goal_per_s": 100,
    }
    lines = [f"# Generation: Darcy {s}^2 on {device} against the CPU path", "",
             "| path | samples | seconds (end to end, file written) | samples/s |", "|---|---|---|---|",
             f"| batched pcg-mg on {device} (`generate --device`) | {n_dev} | {t_dev:.1f} | {n_dev / t_dev:.1f} |",
             f"| CPU, serial ({host[0][1].method}) | {n_cpu} | {t_cpu:.1f} | {n_cpu / t_cpu:.2f} |",
             f"| CPU, {workers} Dask workers | {n_workers} | {t_workers:.1f} | {n_workers / t_workers:.2f} |"
             + (f" ({workers_error})" if workers_error else ""), "",
             f"- batched / serial CPU: {t_cpu / n_cpu / (t_dev / n_dev):.1f}x; batched / {workers} workers: "
             f"{t_workers / n_workers / (t_dev / n_dev):.1f}x",
             "- goal >= 100 samples/s on one H100-class GPU: "
             + ("not judged (quick run, not the goal's size or device)" if quick or not device.startswith("cuda")
                else "met" if n_dev / t_dev >= 100 else "NOT met"),
             f"- agreement on samples 0..{k - 1}: inputs bitwise equal: {bitwise}; outputs max relative difference "
             f"{diff:.1e}; batched relative residuals <= {residual:.1e} (tolerance {gen.config.tol:.0e}: "
             f"{'met' if residual <= gen.config.tol else 'NOT met'})"]
    (folder / "generation.md").write_text("\n".join(lines) + "\n")
    (folder / "generation.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines), flush=True)
    return result


# ------------------------------------------------------------------------------------ parts


def _py(*argv: str) -> list[str]:
    return [sys.executable, *argv]


def _precond_command(methods: str, mg_sizes: str, sizes: str, quick_methods: str):
    def command(args, folder: Path) -> list[str]:
        if args.quick:
            return _py("benchmarks/precond.py", "--quick", "--families", "darcy", "--methods", quick_methods,
                       "--out", str(args.precond_runs), "--device", args.device)
        return _py("benchmarks/precond.py", "--out", str(args.precond_runs), "--methods", methods, "--mg-sizes", mg_sizes,
                   "--sizes", sizes, "--device", args.device, "--repeat", "2", "--families", "darcy,condiff-high")
    return command


def _precond_collect(args, folder: Path) -> None:
    for name in ("precond.md", "precond.json", "iterations.png"):
        if (args.precond_runs / name).exists():
            shutil.copy(args.precond_runs / name, folder / name)


def _zoo_part(task: str, model: str, estimate: tuple[float, float]) -> Part:
    def command(args, folder: Path) -> list[str]:
        cmd = _py("benchmarks/zoo.py", "--tasks", task, "--models", model, "--out", str(args.zoo_work),
                  "--device", args.device)
        return cmd + (["--quick"] if args.quick else ["--gen-device", args.device])

    def collect(args, folder: Path) -> None:
        src = args.zoo_work / "cells" / f"{task}-{model}.json"
        if src.exists():
            shutil.copy(src, folder / "cell.json")
        rows = [json.loads(p.read_text()) for p in sorted((args.zoo_work / "cells").glob("*.json"))]
        zoo.write_table(rows, folder.parent, "quick" if args.quick else "full")

    return Part(f"zoo-{task}-{model}", f"zoo cell {task} x {model}", estimate, command,
                collect)


PARTS = [
    Part("generation", "Darcy 421^2 samples/s, batched GPU multigrid vs the CPU path", (60, 60),
         lambda args, folder: _py(__file__, "--run-generation", str(folder), "--device", args.device)
         + (["--quick"] if args.quick else [])),
    Part("multigrid", "PCG-MG on the GPU at 512^2..2048^2, pyamg's cycle on the GPU", (90, 30),
         lambda args, folder: _py("benchmarks/multigrid.py", "--out", str(folder), "--quick", "--problems", "poisson,darcy")
         if args.quick else _py("benchmarks/multigrid.py", "--out", str(folder), "--problems", "poisson,darcy,condiff",
                                "--sizes", "512,1024,2048", "--host-max", "1024")),
    Part("nmg", "neural multigrid vs PCG-MG on the same GPU, 512^2 and 1024^2", (100, 150),
         _precond_command("pcg-amg,pcg-mg,nmg,nmg2", "512,1024", "512", "pcg-mg,nmg"), _precond_collect),
    Part("fno-speed", "FNO training step fp32 / bf16 / compile vs neuraloperator", (90, 120),
         lambda args, folder: _py("benchmarks/fno_speed.py", "--device", args.device, "--json",
                                  str(folder / "fno_speed.json"), "--variants",
                                  "fp32,bf16" if args.quick else "fp32,bf16,compile")
         + (["--quick"] if args.quick else [])),
    Part("precond-old", "HINTS and FCG with the MgNO preconditioner at 512^2", (60, 200),
         _precond_command("pcg-mg,hints,fcg", "512", "512", "pcg-mg,hints"), _precond_collect),
    _zoo_part("burgers", "fno", (150, 60)),
    _zoo_part("darcy", "lsm", (450, 90)),
    _zoo_part("darcy", "mgno", (600, 90)),
    _zoo_part("darcy", "unet", (300, 60)),
    _zoo_part("darcy", "deeponet", (200, 60)),
    _zoo_part("condiff-poisson", "unet", (250, 60)),
    _zoo_part("condiff-cubic", "unet", (250, 60)),
]


# ------------------------------------------------------------------------------------ the runner


def load_state(out: Path) -> dict:
    path = out / "suite.json"
    return json.loads(path.read_text()) if path.exists() else {"parts": {}}


def save_state(out: Path, state: dict) -> None:
    tmp = out / "suite.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(out / "suite.json")  # never a half-written state


def write_readme(out: Path, state: dict, parts: list[Part]) -> None:
    lines = [f"# GPU suite: {state.get('gpu', '?')}", "",
             f"`python benchmarks/gpu_suite.py` (issue 22); machine: {state.get('machine', '?')}", "",
             "| part | what | status | seconds | files |", "|---|---|---|---|---|"]
    for p in parts:
        r = state["parts"].get(p.name, {})
        status = r.get("status", "not run")
        if r.get("reason"):
            status += f" ({r['reason']})"
        files = sorted(str(f.relative_to(out)) for f in (out / p.name).glob("*") if f.is_file()) if (out / p.name).exists() else []
        lines.append(f"| {p.name} | {p.what} | {status} | {r.get('seconds', '')} | {', '.join(files)} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def run_part(part: Part, args, folder: Path, timeout: float) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = part.command(args, folder)
    t0 = time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        print(f"[suite] {part.name}: {' '.join(cmd)} (at most {timeout:.0f} s)", flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)

        def echo() -> None:  # log and show its output as it comes
            for line in proc.stdout:
                log.write(line)
                log.flush()
                print(f"  {line}", end="", flush=True)

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=max(1.0, timeout))
            stopped = False
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(proc.pid, signal.SIGKILL)  # the part and its children (zoo cells, Dask workers)
            proc.wait()
        reader.join(timeout=5)
    seconds = round(time.perf_counter() - t0, 1)
    if part.collect is not None:
        try:
            part.collect(args, folder)
        except Exception as exc:  # noqa: BLE001
            print(f"[suite] {part.name}: collecting its files failed: {exc}", flush=True)
    if stopped:
        return {"status": "stopped", "reason": "the time budget was spent", "seconds": seconds}
    if proc.returncode != 0:
        tail = (folder / "log.txt").read_text().strip().splitlines()[-1:] or ["no output"]
        return {"status": "failed", "reason": f"exit {proc.returncode}: {tail[0][:200]}", "seconds": seconds}
    return {"status": "done", "seconds": seconds}


def run_suite(args, parts: list[Part]) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = load_state(out)
    state.setdefault("gpu", gpu_name())
    state["machine"] = machine_line()
    t0 = time.perf_counter()
    for part in parts:
        done = state["parts"].get(part.name, {})
        if done.get("status") == "done":
            print(f"[suite] {part.name}: done in an earlier run, skipped", flush=True)
            continue
        left = args.budget - (time.perf_counter() - t0)
        estimate = part.estimate[1 if args.quick else 0]
        if estimate > left or left - args.margin < 1.0:
            state["parts"][part.name] = {"status": "not run",
                                         "reason": f"estimated {estimate:.0f} s, {max(left, 0):.0f} s of the budget left"}
        else:
            state["parts"][part.name] = run_part(part, args, out / part.name, left - args.margin)
        print(f"[suite] {part.name}: {state['parts'][part.name]}", flush=True)
        save_state(out, state)
        # every part this folder has a state for (earlier runs with other --parts too), in the suite's order
        listed = [p for p in PARTS if p.name in state["parts"] or p in parts] + [p for p in parts if p not in PARTS]
        write_readme(out, state, listed)
    return state


def prepare(args) -> None:
    """What the GPU run would otherwise spend its budget on, made here, one job at a time (two
    torch jobs on the same cores slow each other down many times over)."""
    runs = args.precond_runs
    cmd = _py("benchmarks/precond.py", "--train-only", "--families", "darcy,condiff-high", "--methods",
              "nmg,nmg2,hints", "--out", str(runs), "--device", "cpu")
    print(f"[prepare] {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"[prepare] zoo data of burgers in {args.zoo_work / 'data'}", flush=True)
    zoo.make_data("burgers", args.quick, args.zoo_work / "data")
    print(f"[prepare] done: carry {runs / 'runs'} and {args.zoo_work} to the GPU machine", flush=True)


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def machine_line() -> str:
    import platform

    import torch

    return (f"{gpu_name()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}")


def default_out(quick: bool) -> Path:
    if quick:
        return ROOT / "benchmarks" / "results" / "gpu-suite-quick"
    short = gpu_name().lower().replace("nvidia ", "").split()[0]
    return ROOT / "benchmarks" / "measured" / f"{short}-{datetime.date.today().isoformat()}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every part at CPU size (minutes on 2 cores)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 540, quick 900)")
    ap.add_argument("--margin", type=float, default=10.0, help="seconds kept back when a part is stopped")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--parts", default=None, help="comma-separated subset, in the suite's order: "
                    + ",".join(p.name for p in PARTS))
    ap.add_argument("--device", default=None, help="torch device of the GPU parts (default cuda, quick: cpu)")
    ap.add_argument("--precond-runs", type=Path, default=ROOT / "benchmarks" / "results" / "precond-full2",
                    help="benchmarks/precond.py's --out: its trained networks are reused")
    ap.add_argument("--zoo-work", type=Path, default=None, help="zoo data and runs (default benchmarks/results/gpu-suite-zoo)")
    ap.add_argument("--prepare", action="store_true",
                    help="on a CPU, before the GPU run: train the networks the nmg and precond-old parts use and make "
                         "the first zoo cell's data, one after another (about 40 min on 2 cores), to carry along")
    ap.add_argument("--run-generation", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.quick else "cuda")
    if args.run_generation is not None:  # the generation part's own process
        generation_part(args.run_generation, args.quick, args.device)
        return
    if args.prepare:
        return prepare(args)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            sys.exit("error: no CUDA GPU is visible; run on a GPU machine, or --quick to try the suite on this CPU")
    args.budget = args.budget or (900.0 if args.quick else 540.0)
    args.out = (args.out or default_out(args.quick)).resolve()
    if args.quick and args.precond_runs == ROOT / "benchmarks" / "results" / "precond-full2":
        args.precond_runs = ROOT / "benchmarks" / "results" / "precond"
    args.precond_runs = args.precond_runs.resolve()
    args.zoo_work = (args.zoo_work or ROOT / "benchmarks" / "results" / ("gpu-suite-zoo" + ("-quick" if args.quick else ""))).resolve()
    parts = PARTS
    if args.parts:
        wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
        unknown = sorted(set(wanted) - {p.name for p in PARTS})
        if unknown:
            sys.exit(f"error: unknown part {unknown}; choose from {[p.name for p in PARTS]}")
        parts = [p for p in PARTS if p.name in wanted]
    state = run_suite(args, parts)
    print(f"[suite] wrote {args.out / 'README.md'}; parts: "
          + ", ".join(f"{k} {v['status']}" for k, v in state["parts"].items()), flush=True)


if __name__ == "__main__":
    main()
