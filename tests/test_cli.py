"""End-to-end: train.py, sample.py and evaluate.py as a user runs them, on the embedded digits.

Each CLI runs at least once as a real process (exit code, output, one CPU device); the
other checks call the same ``main`` in this process (:func:`call`: as ``cli.run`` does for
the command line, on conftest's 4 CPU devices), which saves a Python, JAX and TensorFlow
start-up per check. One small trained run (:func:`trained`) serves most of them.

The processes that do not depend on each other (the trained run, the killed and the
interrupted run, the synthetic benchmark) start together before the module's first test
(:func:`_start_early`) and run while the in-process checks, ordered first, use the other
core; the checks that need them wait for them.
"""

import contextlib
import functools
import importlib.util
import io
import json
import os
import random
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, xla_flags

pytestmark = pytest.mark.slow

# A small MLP VAE that still learns the digits in STEPS steps. It checkpoints every 50 steps
# (so kill -9 lands between checkpoints) and fuses 5 steps per call (so throughput is measured).
# run.steps is overridden by --steps STEPS (the preset-then-flags rule).
PRESET = {"model": {"hidden_dims": [64], "latent_dim": 8}, "optimizer": {"learning_rate": 0.003},
          "run": {"steps": 100000, "eval_every": 150, "checkpoint_every": 50, "steps_per_call": 5}}
STEPS = 300
LATENT = PRESET["model"]["latent_dim"]


def process_env(devices, xla_cache=None):
    """The environment of a CLI process with ``devices`` CPU devices; with ``xla_cache`` (a
    folder) it keeps every compiled program there, and a later process running the same
    program on the same devices loads it instead of compiling it again."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
    if xla_cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(xla_cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


def run(script, *args, devices=1, cwd=REPO, timeout=600):
    """``python script args`` in a fresh process with ``devices`` CPU devices."""
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd,
                          env=process_env(devices), capture_output=True, text=True, timeout=timeout)


class Background:
    """A process started now and awaited with :meth:`result` (a CompletedProcess)."""

    def __init__(self, args, devices=1, cwd=REPO, env=None):
        self.args = [str(a) for a in args]
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.args, cwd=cwd, env=env or process_env(devices), stdout=self._out,
                                     stderr=self._err, text=True)

    def signal_after(self, path, signum, delay):
        """Sends ``signum`` ``delay`` seconds after ``path`` appears (watched from a thread)."""

        def watch():
            deadline = time.time() + 300
            while time.time() < deadline and self.proc.poll() is None and not os.path.exists(path):
                time.sleep(0.02)
            time.sleep(delay)
            if self.proc.poll() is None:
                self.proc.send_signal(signum)

        threading.Thread(target=watch, daemon=True).start()
        return self

    def result(self, timeout=600):
        self.proc.wait(timeout=timeout)
        self._out.seek(0)
        self._err.seek(0)
        return subprocess.CompletedProcess(self.args, self.proc.returncode, self._out.read(), self._err.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(script, *args, devices=1):
    """``python script args`` in the background, with ``devices`` CPU devices."""
    return Background([sys.executable, os.path.join(REPO, script), *args], devices)


_MODULES = {}


def call(script, *args):
    """``script``'s main(args) in this process, as ``sys.exit(cli.run(main))`` runs it from the
    command line: returns (exit code, stdout, stderr). argparse errors exit through SystemExit."""
    from jaxae import cli

    if script not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_cli_{script[:-3]}", os.path.join(REPO, script))
        _MODULES[script] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_MODULES[script])
    out, err = io.StringIO(), io.StringIO()
    handler, argv0 = signal.getsignal(signal.SIGTERM), sys.argv[0]
    sys.argv[0] = script
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.run(_MODULES[script].main, [str(a) for a in args])
            except SystemExit as e:
                code = e.code
    finally:
        signal.signal(signal.SIGTERM, handler)  # cli.run makes SIGTERM raise KeyboardInterrupt.
        sys.argv[0] = argv0
    return code, out.getvalue(), err.getvalue()


def one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _params(workdir):
    import jax

    from jaxae.workdir import load_model

    _, params, step = load_model(str(workdir))
    return [np.asarray(x) for x in jax.tree.leaves(params)], step


def save_digits_npz(mnist5k, folder) -> str:
    """mnist_5k as an .npz dataset (the same arrays): a process that reads it never imports
    TensorFlow, which saves seconds of start-up where TFDS is not what a test is about."""
    from jaxae import data

    _, train, test = mnist5k
    path = str(folder / "mnist_5k.npz")
    data.save_npz(path, {"train": train, "test": test}, num_classes=10)
    return path


@pytest.fixture(scope="module")
def digits_npz(mnist5k, tmp_path_factory):
    return save_digits_npz(mnist5k, tmp_path_factory.mktemp("npz"))


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "small.json"
    path.write_text(json.dumps(PRESET))
    return str(path)


@pytest.fixture(scope="module")
def training_process(tfds_dir, preset, tmp_path_factory):
    """``python train.py --config PRESET --steps 300``: the real train.py process, on 1 CPU device."""
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    process = start("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--config", preset, "--steps", STEPS,
                    "--no_progress")
    yield workdir, process
    process.stop()


@pytest.fixture(scope="module")
def trained(training_process):
    workdir, process = training_process
    result = process.result()
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.fixture(scope="module")
def killed(digits_npz, preset, tmp_path_factory):
    """The same run on 4 devices (and the same digits, from an .npz file, streamed from their
    memory-mapped copy), killed by SIGKILL at a random moment (possibly mid-checkpoint, and
    mid-epoch: 35 steps per epoch) once it has saved step 50: (workdir, its flags, process)."""
    workdir = tmp_path_factory.mktemp("killed") / "w"
    flags = ["--workdir", workdir, "--dataset", digits_npz, "--config", preset, "--steps", STEPS, "--no_progress",
             "--input", "streaming", "--data_dir", workdir.parent / "cache"]
    process = start("train.py", *flags, devices=4).signal_after(
        workdir / "checkpoints" / "50", signal.SIGKILL, random.Random(0).uniform(0.0, 0.5))
    yield workdir, flags, process
    process.stop()


@pytest.fixture(scope="module")
def interrupted(digits_npz, tmp_path_factory):
    """A long run sent SIGTERM (as on preemption) half a second after its first evaluation."""
    workdir = tmp_path_factory.mktemp("interrupted") / "run"
    process = start("train.py", "--workdir", workdir, "--dataset", digits_npz, "--steps", 100000, "--eval_every", 50,
                    "--checkpoint_every", 100000, "--steps_per_call", 10, "--hidden_dims", 16, "--latent_dim", 4,
                    "--no_progress")
    process.signal_after(workdir / "metrics.jsonl", signal.SIGTERM, 0.5)
    yield workdir, process
    process.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_early(request):
    """Starts the processes that the selected tests of this module use before the first of them."""
    wanted = set().union(*(item.fixturenames for item in request.session.items if item.module is request.module))
    for name in ("training_process", "killed", "interrupted", "synthetic_bench"):
        if name in wanted:
            request.getfixturevalue(name)


# The benchmark's matmul peak, measured on 512x512 matrices for 0.3 s instead of 2048x2048 for 1 s
# (a 2048 bfloat16 matmul takes seconds on a busy 2-core CPU).
SMALL_PEAK = ("import functools, jaxae.perf as perf; "
              "perf.matmul_peak_flops = functools.partial(perf.matmul_peak_flops, 512, min_seconds=0.3)")


@pytest.fixture(scope="module")
def synthetic_bench(tmp_path_factory):
    """benchmarks/speed.py --synthetic in a process whose imports of tensorflow(_datasets),
    tensorboardX and mlxtend fail (as on a bare GPU image): (its JSON report's path, process)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    blocked = ("tensorflow", "tensorflow_datasets", "tensorboardX", "mlxtend")
    code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({blocked!r})); {SMALL_PEAK}; "
            f"sys.argv = ['speed.py', '--synthetic', '--presets', 'mlp_burda', '--batch_sizes', '64', "
            f"'--steps_per_call', '3', '--seconds', '0.2', '--dtype', 'bfloat16', '--json', {str(out)!r}]; "
            "runpy.run_path('benchmarks/speed.py', run_name='__main__')")
    process = Background([sys.executable, "-c", code])
    yield out, process
    process.stop()


@pytest.fixture(scope="module")
def sharded(tfds_dir, preset, tmp_path_factory):
    """The same run as ``trained`` in this process: each batch sharded over 4 CPU devices."""
    workdir = tmp_path_factory.mktemp("sharded") / "w"
    code, out, err = call("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--config", preset,
                          "--steps", STEPS, "--no_progress")
    assert code == 0, err[-3000:]
    assert "4 cpu device(s)" in out
    return workdir


# First the checks that need no process of this module's (they run while those processes do).

def test_unknown_model_is_one_line_and_exit_2(tmp_path):
    """The real process: argparse's error is one line, then exit status 2."""
    result = run("train.py", "--workdir", tmp_path / "w", "--model", "nope")
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("train.py: error: argument --model: invalid choice: 'nope'"), line
    assert not (tmp_path / "w").exists()


BAD_TRAIN = [
    (["--model", "foo"], "invalid choice: 'foo'"),
    (["--dataset", "no_such_set"], "'no_such_set' is not a TFDS dataset"),
    (["--latent_dim", "0"], "--latent_dim must be > 0, got 0"),
    (["--learning_rate", "-0.001"], "--learning_rate must be > 0"),
    (["--batch_size", "-4"], "--batch_size must be > 0"),
    (["--steps", "0"], "--steps must be > 0"),
    (["--hidden_dims", "128,x"], "not a comma-separated list of integers"),
    (["--batch_size", "5000"], "exceeds the 4500 training images"),
    (["--batch_size", "12", "--grad_accum", "2"], "--batch_size 12 must be divisible by the 4 devices times "
                                                  "--grad_accum 2"),
    (["--batch_size", "100000"], "--batch_size 100000 is absurdly large"),
    (["--eval_split", "validation"], "split 'validation' is not in 'mnist_5k'"),
    (["--likelihood", "gaussian"], "use it with --binarize none"),
    (["--likelihood", "logistic_mixture"], "--likelihood logistic_mixture scores 8-bit grey levels; use it with"),
    (["--num_mixtures", "0"], "--num_mixtures must be > 0, got 0"),
    (["--hidden_dims", "2000000,2000000"], "parameters, more than the"),
    (["--manual_dir", "/no/such/dir"], "--manual_dir '/no/such/dir' is not a directory"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--coordinator_address", "nohost"], "--coordinator_address 'nohost' must be HOST:PORT"),
    (["--process_id", "1"], "a multi-process run also needs --coordinator_address"),
    (["--config", "/no/such.json"], "--config '/no/such.json' is not a file"),
    (["--model", "iwae", "--free_bits", "0.5"], "--free_bits 0.5 is not used by --model iwae"),
]


@pytest.mark.parametrize("args,message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tfds_dir, tmp_path, args, message):
    workdir = tmp_path / "w"
    code, _, err = call("train.py", "--workdir", workdir, "--data_dir", tfds_dir, *args)
    assert code == 2, err
    assert message in one_line(err), err
    assert not workdir.exists()


def test_unwritable_workdir_is_refused(tmp_path, tfds_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = call("train.py", "--workdir", blocker / "run", "--data_dir", tfds_dir)
    assert code == 2
    assert "cannot be created or written" in one_line(err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_workdir_on_a_file_system_that_creates_nothing_is_refused(tmp_path, tfds_dir):
    """access() allows writing to /proc for root, but nothing can be created there."""
    code, _, err = call("train.py", "--workdir", "/proc/jaxae/run", "--data_dir", tfds_dir)
    assert code == 2
    assert one_line(err) == "train.py: error: --workdir '/proc/jaxae/run' cannot be created " + (
        "in '/proc' (No such file or directory (ENOENT))" if os.getuid() == 0 else "or written ('/proc' is not a "
                                                                                     "writable directory)")


# Runs argv[1:] with writes past argv[0] bytes failing with EFBIG (File too large), as on a
# full disk; SIGXFSZ, which would kill the process, is ignored (both survive exec).
LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
           "limit = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
           "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


def test_a_checkpoint_write_that_fails_is_one_line_exit_1_and_keeps_the_last_good_one(trained, tfds_dir, preset,
                                                                                     tmp_path):
    """The real failure path, on a copy of the trained run continued by 50 steps: Orbax's
    background write of step 350 fails in TensorStore (files over 400 kB are refused; the
    checkpoint's data file is ~1 MB, every other file smaller). One line on stderr naming
    the folder, the reason and the last good checkpoint; exit 1; step 300 intact; the lock
    released."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    result = subprocess.run([sys.executable, "-c", LIMITED, "400000", os.path.join(REPO, "train.py"), "--workdir",
                             str(run), "--data_dir", str(tfds_dir), "--config", str(preset), "--steps", str(STEPS + 50),
                             "--no_progress"],
                            env=process_env(1), capture_output=True, text=True, timeout=600)
    folder = run / "checkpoints"
    assert result.returncode == 1, result.stderr[-3000:]
    assert one_line(result.stderr) == (f"train.py: error: cannot write '{folder}': File too large (EFBIG); last good "
                                       f"checkpoint: {folder}/{STEPS}; rerun the same command to resume once it can "
                                       "be written")
    assert max(int(name) for name in os.listdir(folder) if name.isdigit()) == STEPS
    assert not (run / "lock.json").exists()


def test_sample_refuses_a_workdir_without_checkpoint(tmp_path):
    from jaxae.config import Config

    Config.create(hidden_dims=(16,), latent_dim=4).save(str(tmp_path / "config.json"))
    (tmp_path / "input_spec.json").write_text('{"image_shape": [28, 28, 1], "num_classes": 10, "mode": "binary"}')
    code, _, err = call("sample.py", "--workdir", tmp_path, "--output", tmp_path / "o.png")
    assert code == 2 and "holds no checkpoint" in one_line(err)
    assert not (tmp_path / "o.png").exists()


def test_speed_benchmark_runs(tfds_dir, tmp_path, monkeypatch):
    """benchmarks/speed.py on the digits, run in this process."""
    from jaxae import perf

    out = tmp_path / "bench.json"
    monkeypatch.setattr(perf, "matmul_peak_flops", functools.partial(perf.matmul_peak_flops, 512, min_seconds=0.3))
    monkeypatch.setattr(sys, "argv", ["speed.py", "--data_dir", tfds_dir, "--presets", "mlp_flax", "--batch_sizes",
                                      "32", "--steps_per_call", "5", "--seconds", "0.2", "--json", str(out)])
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(os.path.join(REPO, "benchmarks", "speed.py"), run_name="__main__")
    with open(out) as f:
        report = json.load(f)
    assert [r["preset"] for r in report["rows"]] == ["mlp_flax"]
    for row in report["rows"]:
        assert row["train_images_per_sec"] > 0 and 0 < row["fraction_of_peak"] < 1.5
        assert row["train_flops_per_image"] > 1e6


def _run_torch_conv(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["torch_conv.py", *argv])
    return runpy.run_path(os.path.join(REPO, "benchmarks", "torch_conv.py"), run_name="__main__")


def test_torch_comparison_without_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)                  # import torch -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        _run_torch_conv(monkeypatch, "--rounds", "1")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in str(exit_info.value.code)


def test_torch_replica_is_the_conv_preset(monkeypatch):
    """Where PyTorch is installed (a benchmark-only dependency): the replica has the conv
    preset's parameter count and depth-to-space order, and the comparison runs."""
    pytest.importorskip("torch")
    import math

    import jax
    import jax.numpy as jnp

    from jaxae.config import Config
    from jaxae.data import InputSpec
    from jaxae.families import make_model
    from jaxae.nets.conv import upsample2x

    monkeypatch.setattr(sys, "argv", ["torch_conv.py"])
    module = runpy.run_path(os.path.join(REPO, "benchmarks", "torch_conv.py"))
    torch, _, replica = module["torch_replica"](False)
    model = make_model(Config.create(**module["speed"].PRESETS["conv"]), InputSpec((28, 28, 1), 10, "dynamic"))
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    assert sum(p.numel() for p in replica.parameters()) == sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))
    h = np.random.default_rng(0).standard_normal((2, 3, 3, 8)).astype(np.float32)            # NHWC, 4 x 2 channels
    shuffled = replica.decoder[1](torch.from_numpy(h).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(shuffled, np.asarray(upsample2x(jnp.asarray(h))))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _run_torch_conv(monkeypatch, "--rounds", "1", "--seconds", "0.2", "--batch_size", "8")
    assert "median jaxae/torch:" in out.getvalue()


# Then the checks that wait for a process.

def test_train_on_4_devices_sharded_and_pmap_matches_1_device(trained, sharded, tfds_dir, preset, tmp_path):
    """The run on 4 devices, sharding each batch over a mesh or under pmap, matches the
    1-device process (to float tolerance: only the order of the gradient sums differs)."""
    code, out, err = call("train.py", "--workdir", tmp_path / "pmap", "--data_dir", tfds_dir, "--config", preset,
                          "--steps", STEPS, "--parallel", "pmap", "--no_progress")
    assert code == 0, err[-3000:]
    assert "4 cpu device(s)" in out
    one, _ = trained
    nelbo = _metrics(one)[-1]["test_nelbo"]
    one_params, _ = _params(one)
    for workdir in (sharded, tmp_path / "pmap"):
        np.testing.assert_allclose(_metrics(workdir)[-1]["test_nelbo"], nelbo, rtol=1e-4)
        params, step = _params(workdir)
        assert step == STEPS
        for x, y in zip(one_params, params):
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-4)


def test_kill_9_then_resume_equals_an_uninterrupted_run(killed, sharded):
    """train.py (4 devices, streaming its input) killed by SIGKILL, then resumed: the params
    equal those of the uninterrupted run (``sharded``, holding the same digits from TFDS on
    its devices) bitwise."""
    workdir, flags, process = killed
    result = process.result()
    killed_at = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert killed_at and killed_at[-1] < STEPS, f"the run finished before the kill: {killed_at}"
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]

    code, out, err = call("train.py", *flags)
    assert code == 0, err[-3000:]
    straight, step_a = _params(sharded)
    resumed, step_b = _params(workdir)
    assert step_a == step_b == STEPS
    for x, y in zip(straight, resumed):
        np.testing.assert_array_equal(x, y)
    steps = [m["step"] for m in _metrics(workdir)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


def test_sigterm_checkpoints_the_current_step_and_exits_130(interrupted):
    """Preemption (SIGTERM) or Ctrl-C: the run saves the step it reached, not only the last
    periodic checkpoint, and exits with status 130."""
    workdir, process = interrupted
    result = process.result()
    assert result.returncode == 130, result.stderr[-2000:]
    saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert len(saved) == 1 and 50 <= saved[0] < 100000 and saved[0] % 10 == 0, saved
    assert f"saved a checkpoint at step {saved[0]}" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "train.py: interrupted"


def test_speed_benchmark_synthetic_needs_no_tfds_tensorboardx_or_mlxtend(synthetic_bench):
    out, process = synthetic_bench
    result = process.result()
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        report = json.load(f)
    assert report["synthetic"] and report["dtype"] == "bfloat16"
    assert set(report["matmul_peaks_flops_per_sec"]) == {"float32", "bfloat16"}
    (row,) = report["rows"]
    assert row["dtype"] == "bfloat16" and row["train_images_per_sec"] > 0 and 0 < row["fraction_of_peak"] < 1.5
    assert row["xla_train_call_mib"] > 0 and row["rss_growth_mib"] >= 0 and row["device_peak_mib"] is None


def _snapshot(folder):
    snap = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                snap[path] = f.read()
    return snap


def test_changed_config_on_existing_workdir_is_refused_untouched(trained, tfds_dir, preset):
    workdir, _ = trained
    before = _snapshot(workdir)
    code, _, err = call("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--config", preset,
                        "--steps", STEPS, "--latent_dim", 7)
    assert code == 2
    assert f"different config: latent_dim={LATENT} (asked 7)" in one_line(err)
    assert _snapshot(workdir) == before


def test_preset_then_flags_make_the_config(trained, tfds_dir):
    """--config PRESET sets what it names, a flag given on the command line overrides it, and
    everything else keeps its default: as written to config.json."""
    workdir, _ = trained
    with open(os.path.join(workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["run"]["steps"] == STEPS                      # The flag beats the preset's 100000.
    assert saved["run"]["eval_every"] == 150 and saved["run"]["checkpoint_every"] == 50
    assert saved["run"]["steps_per_call"] == 5
    assert saved["model"]["hidden_dims"] == [64] and saved["model"]["latent_dim"] == LATENT
    assert saved["optimizer"]["learning_rate"] == 0.003
    assert saved["data"]["data_dir"] == tfds_dir
    assert saved["model"]["family"] == "vae" and saved["run"]["batch_size"] == 128  # Defaults.


def test_train_writes_everything_and_learns(trained, mnist5k):
    import jax

    from jaxae import evaluation, families, inputs, training
    from jaxae import workdir as layout

    workdir, result = trained
    for name in ("config.json", "input_spec.json", "metrics.jsonl", "samples.png", "reconstructions.png",
                 "prior.npz"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["200", "250", "300"]  # Keeps 3.
    metrics = _metrics(workdir)
    assert [m["step"] for m in metrics] == [150, 300]
    last = metrics[-1]
    assert last["train_images_per_sec"] > 1000
    assert abs(last["test_bpd"] - last["test_nelbo"] / (784 * np.log(2))) < 1e-6
    # The untrained model scores about 545 nats (784 ln 2 plus a small KL); training on
    # real digits must bring the held-out NELBO far below that.
    config = layout.load_config(workdir)
    model = families.make_model(config, layout.load_input_spec(workdir))
    init = training.create_train_state(model, training.make_optimizer(config.optimizer, 1), jax.random.fold_in(
        jax.random.key(config.run.seed), 0))
    initial = evaluation.evaluate(model, init.params, mnist5k[2].images, inputs.eval_key())["nelbo"]
    assert initial > 500
    assert last["test_nelbo"] < 0.3 * initial, (initial, last)
    assert "with 1 cpu device(s)" in result.stdout
    assert "test nelbo" in result.stdout and "final:" in result.stdout
    with Image.open(os.path.join(workdir, "samples.png")) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_sample_round_trip_and_4_devices_match_1(trained, tmp_path):
    """sample.py as a process (1 device), then twice in this process (4 devices, the batch
    sharded): the same seed draws the same images, bitwise on the same devices."""
    workdir, _ = trained
    flags = ["--workdir", workdir, "--num_samples", 12, "--seed", 3, "--temperature", 0.8]
    result = run("sample.py", *flags, "--output", tmp_path / "s.png", "--save_array", tmp_path / "s.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 1 cpu device(s)" in result.stdout and f"from step {STEPS}" in result.stdout
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))  # 8 columns, 2 rows
    sharded = []
    for name in ("t", "u"):
        code, out, err = call("sample.py", *flags, "--output", tmp_path / f"{name}.png",
                              "--save_array", tmp_path / f"{name}.npy")
        assert code == 0, err[-3000:]
        assert "on 4 cpu device(s)" in out and f"wrote {tmp_path / name}.png (12 images)" in out
        sharded.append(np.load(tmp_path / f"{name}.npy"))
    np.testing.assert_array_equal(sharded[0], sharded[1])
    np.testing.assert_allclose(sharded[0], images, rtol=1e-5, atol=1e-6)


def test_sample_reconstruct_shards_over_4_devices_and_matches_1_device(trained, tmp_path, mnist5k):
    import jax

    from jaxae import inputs, sampling
    from jaxae.workdir import load_model

    workdir, _ = trained
    code, _, err = call("sample.py", "--workdir", workdir, "--reconstruct", 16, "--output", tmp_path / "r.png",
                        "--save_array", tmp_path / "r.npy")
    assert code == 0, err[-3000:]
    model, params, _ = load_model(workdir)
    shown = mnist5k[2].images[:16]
    params = jax.device_put(params, jax.devices()[0])
    one = sampling.interleave_rows(inputs.scaled(shown, model.spec), sampling.reconstruct(model, params, shown), 8)
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), np.asarray(one), rtol=1e-5, atol=1e-6)


def test_bad_evaluate_flag_is_one_line_and_exit_2(trained):
    """The real process: a ConfigError is one line, then exit status 2."""
    workdir, _ = trained
    result = run("evaluate.py", "--workdir", workdir, "--iwae_samples", -1)
    assert result.returncode == 2
    assert one_line(result.stderr) == "evaluate.py: error: --iwae_samples must be >= 0, got -1"


@pytest.mark.parametrize("args,message", [
    (["--workdir", "/no/such/run"], "holds no config.json"),
    (["--num_samples", "0"], "--num_samples must be in 1..100000"),
    (["--temperature", "-1"], "--temperature values must be > 0"),
    (["--output", "x.jpg"], "must end in .png"),
])
def test_bad_sample_input(trained, tmp_path, monkeypatch, args, message):
    workdir, _ = trained
    monkeypatch.chdir(tmp_path)
    code, _, err = call("sample.py", "--workdir", workdir, *args)
    assert code == 2
    assert message in one_line(err)
    assert os.listdir(tmp_path) == []


def test_evaluate_writes_literature_numbers(trained, tfds_dir):
    workdir, _ = trained
    result = run("evaluate.py", "--workdir", workdir, "--iwae_samples", 100, "--chunk", 50, "--num_images", 60,
                 "--batch_size", 20, "--data_dir", tfds_dir, "--no_progress")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    assert report["num_images"] == 60 and report["iwae_samples"] == 100 and report["step"] == STEPS
    assert report["devices"] == 1 and report["processes"] == 1
    assert report["nll_iwae"] < report["nelbo"] < 200
    assert report["bpd_iwae"] == pytest.approx(report["nll_iwae"] / (784 * np.log(2)))
    assert 0 < report["active_units"] <= LATENT and len(report["kl_per_unit"]) == LATENT
    # At least the decoder's last layer (64 -> 784, a multiply and an add each) per importance sample.
    assert report["iwae_flops_per_image"] > 100 * 2 * 64 * 784 and report["images_per_sec"] > 0
    assert "nll_iwae(k=100)" in result.stdout and "eval_test.json" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--iwae_samples", "-1"], "--iwae_samples must be >= 0"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
    (["--split", "validation"], "split 'validation' is not in 'mnist_5k'"),
    (["--batch_size", "10"], "--batch_size 10 must be divisible by the 4 devices"),
])
def test_bad_evaluate_input(trained, tfds_dir, args, message):
    workdir, _ = trained
    code, _, err = call("evaluate.py", "--workdir", workdir, "--data_dir", tfds_dir, *args)
    assert code == 2
    assert message in one_line(err)
