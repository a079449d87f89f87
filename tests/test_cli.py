"""End-to-end: train.py and sample.py as a user runs them, on the embedded digits."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytestmark = pytest.mark.slow

SHORT = ["--steps", "600", "--eval_every", "300", "--checkpoint_every", "300", "--no_progress"]


def run(script, *args, devices=1, cwd=REPO):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tfds_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run") / "w")
    result = run("train.py", "--workdir", workdir, "--data_dir", tfds_dir, *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_writes_everything_and_learns(trained, mnist5k):
    import jax

    from jaxae import checkpoints, evaluation, training
    from jaxae.data import eval_key
    from jaxae.models import make_model

    workdir, result = trained
    for name in ("config.json", "input_spec.json", "metrics.jsonl", "samples.png", "reconstructions.png"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["300", "600"]
    metrics = _metrics(workdir)
    assert [m["step"] for m in metrics] == [300, 600]
    last = metrics[-1]
    assert last["train_images_per_sec"] > 1000
    assert abs(last["test_bpd"] - last["test_nelbo"] / (784 * np.log(2))) < 1e-6
    # The untrained model scores about 545 nats (784 ln 2 plus a small KL); training on
    # real digits must bring the held-out NELBO far below that.
    config = checkpoints.load_run_config(workdir)
    model = make_model(config, checkpoints.load_input_spec(workdir))
    init = training.create_train_state(model, training.make_optimizer(config, 1), jax.random.fold_in(
        jax.random.key(config.seed), 0))
    initial = evaluation.evaluate(model, init.params, mnist5k[2].images, eval_key())["nelbo"]
    assert initial > 500
    assert last["test_nelbo"] < 0.3 * initial, (initial, last)
    assert "test nelbo" in result.stdout and "final:" in result.stdout
    with Image.open(os.path.join(workdir, "samples.png")) as im:
        assert im.size[0] > 200 and im.size[1] > 200


def test_sample_round_trip(trained, tmp_path):
    workdir, _ = trained
    out, arr = tmp_path / "s.png", tmp_path / "s.npy"
    result = run("sample.py", "--workdir", workdir, "--num_samples", 12, "--output", out, "--save_array", arr,
                 "--seed", 3, "--temperature", 0.8)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cpu" in result.stdout and "from step 600" in result.stdout
    images = np.load(arr)
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05
    with Image.open(out) as im:
        assert im.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))  # 8 columns, 2 rows
    again = tmp_path / "t.npy"
    run("sample.py", "--workdir", workdir, "--num_samples", 12, "--output", tmp_path / "t.png",
        "--save_array", again, "--seed", 3, "--temperature", 0.8)
    np.testing.assert_array_equal(images, np.load(again))


def test_sample_shards_over_4_devices_and_matches_1_device(trained, tmp_path):
    workdir, _ = trained
    arrays = {}
    for devices in (1, 4):
        out = tmp_path / f"{devices}.npy"
        result = run("sample.py", "--workdir", workdir, "--num_samples", 16, "--output", tmp_path / f"{devices}.png",
                     "--save_array", out, devices=devices)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"on {devices} cpu device(s)" in result.stdout
        arrays[devices] = np.load(out)
        out = tmp_path / f"r{devices}.npy"
        result = run("sample.py", "--workdir", workdir, "--reconstruct", 16, "--output", tmp_path / "r.png",
                     "--save_array", out, devices=devices)
        assert result.returncode == 0, result.stderr[-3000:]
        arrays[f"r{devices}"] = np.load(out)
    np.testing.assert_allclose(arrays[4], arrays[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["r4"], arrays["r1"], rtol=1e-5, atol=1e-6)


def _snapshot(folder):
    snap = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                snap[path] = f.read()
    return snap


BAD_TRAIN = [
    (["--model", "foo"], "invalid choice: 'foo'"),
    (["--dataset", "no_such_set"], "'no_such_set' is not a TFDS dataset"),
    (["--latent_dim", "0"], "--latent_dim must be > 0, got 0"),
    (["--learning_rate", "-0.001"], "--learning_rate must be > 0"),
    (["--batch_size", "-4"], "--batch_size must be > 0"),
    (["--steps", "0"], "--steps must be > 0"),
    (["--hidden_dims", "128,x"], "not a comma-separated list of integers"),
    (["--batch_size", "5000"], "exceeds the 4500 training images"),
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
]


@pytest.mark.parametrize("args,message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tfds_dir, tmp_path, args, message):
    workdir = tmp_path / "w"
    result = run("train.py", "--workdir", workdir, "--data_dir", tfds_dir, *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def test_changed_config_on_existing_workdir_is_refused_untouched(trained, tfds_dir):
    workdir, _ = trained
    before = _snapshot(workdir)
    result = run("train.py", "--workdir", workdir, "--data_dir", tfds_dir, "--latent_dim", 7, *SHORT)
    assert result.returncode == 2
    assert "different config: latent_dim=16 (asked 7)" in result.stderr.strip().splitlines()[-1]
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("args,message", [
    (["--workdir", "/no/such/run"], "holds no config.json"),
    (["--num_samples", "0"], "--num_samples must be in 1..100000"),
    (["--temperature", "-1"], "--temperature values must be > 0"),
    (["--output", "x.jpg"], "must end in .png"),
])
def test_bad_sample_input(trained, tmp_path, args, message):
    workdir, _ = trained
    result = run("sample.py", "--workdir", workdir, *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert os.listdir(tmp_path) == []


def test_sample_refuses_a_workdir_without_checkpoint(tmp_path):
    from jaxae.config import Config

    Config().save(str(tmp_path / "config.json"))
    (tmp_path / "input_spec.json").write_text('{"image_shape": [28, 28, 1], "num_classes": 10, "mode": "binary"}')
    result = run("sample.py", "--workdir", tmp_path, "--output", tmp_path / "o.png")
    assert result.returncode == 2 and "holds no checkpoint" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_train_on_8_devices_sharded_and_pmap_matches_1_device(tfds_dir, tmp_path):
    """train.py on 8 fake devices, sharding each batch over a mesh or under pmap: the numbers
    match the 1-device run (to float tolerance: only the order of the gradient sums differs)."""
    short = ["--steps", "40", "--eval_every", "40", "--no_progress", "--data_dir", tfds_dir]
    runs = {"1": (1, []), "8-sharded": (8, []), "8-pmap": (8, ["--parallel", "pmap"])}
    for name, (devices, extra) in runs.items():
        result = run("train.py", "--workdir", tmp_path / name, *short, *extra, devices=devices)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{devices} cpu device(s)" in result.stdout
    one = _metrics(str(tmp_path / "1"))[-1]
    assert one["test_nelbo"] < 300
    for name in ("8-sharded", "8-pmap"):
        np.testing.assert_allclose(_metrics(str(tmp_path / name))[-1]["test_nelbo"], one["test_nelbo"], rtol=1e-4)
    from jaxae.checkpoints import load_model

    import jax

    _, a, _ = load_model(str(tmp_path / "1"))
    _, b, _ = load_model(str(tmp_path / "8-pmap"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tfds_dir, tmp_path):
    """SIGKILL at a random moment (possibly mid-checkpoint), resume, compare params bitwise."""

    import jax

    from jaxae.checkpoints import load_model

    flags = ["--data_dir", tfds_dir, "--steps", 300, "--checkpoint_every", 10, "--eval_every", 150,
             "--steps_per_call", 5, "--hidden_dims", 64, "--latent_dim", 8, "--no_progress"]
    straight = run("train.py", "--workdir", tmp_path / "straight", *flags)
    assert straight.returncode == 0, straight.stderr[-2000:]

    workdir = tmp_path / "killed"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--workdir", str(workdir),
                             *map(str, flags)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # Wait until training has started.
        if (workdir / "checkpoints" / "20").exists():
            break
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert killed_at and killed_at[-1] < 300, f"the run finished before the kill: {killed_at}"

    resumed = run("train.py", "--workdir", workdir, *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, a, step_a = load_model(str(tmp_path / "straight"))
    _, b, step_b = load_model(str(workdir))
    assert step_a == step_b == 300
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    steps = [m["step"] for m in _metrics(str(workdir))]
    assert steps == sorted(set(steps)) and steps[-1] == 300


def test_sigterm_checkpoints_the_current_step_and_exits_130(tfds_dir, tmp_path):
    """Preemption (SIGTERM) or Ctrl-C: the run saves the step it reached, not only the last
    periodic checkpoint, and a rerun resumes from there."""
    workdir = tmp_path / "run"
    flags = ["--data_dir", tfds_dir, "--steps", "100000", "--eval_every", "50", "--checkpoint_every", "100000",
             "--steps_per_call", "10", "--no_progress"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--workdir", str(workdir),
                             *map(str, flags)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (workdir / "metrics.jsonl").exists():  # Step 50 is done.
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    saved = sorted(int(p) for p in os.listdir(workdir / "checkpoints") if p.isdigit())
    assert len(saved) == 1 and 50 <= saved[0] < 100000 and saved[0] % 10 == 0, saved
    assert f"saved a checkpoint at step {saved[0]}" in stderr and "Traceback" not in stderr


def test_unwritable_workdir_is_refused(tmp_path, tfds_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("train.py", "--workdir", blocker / "run", "--data_dir", tfds_dir)
    assert result.returncode == 2
    assert "cannot be created or written" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_writes_literature_numbers(trained, tfds_dir):
    workdir, _ = trained
    result = run("evaluate.py", "--workdir", workdir, "--iwae_samples", 100, "--chunk", 50, "--num_images", 60,
                 "--batch_size", 20, "--data_dir", tfds_dir, "--no_progress")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "eval_test.json")) as f:
        report = json.load(f)
    assert report["num_images"] == 60 and report["iwae_samples"] == 100 and report["step"] == 600
    assert report["nll_iwae"] < report["nelbo"] < 200
    assert report["bpd_iwae"] == pytest.approx(report["nll_iwae"] / (784 * np.log(2)))
    assert 0 < report["active_units"] <= 16 and len(report["kl_per_dim"]) == 16
    assert report["iwae_flops_per_image"] > 100 * 1e5 and report["images_per_sec"] > 0
    assert "nll_iwae(k=100)" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--iwae_samples", "-1"], "--iwae_samples must be >= 0"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
    (["--split", "validation"], "split 'validation' is not in 'mnist_5k'"),
])
def test_bad_evaluate_input(trained, tfds_dir, args, message):
    workdir, _ = trained
    result = run("evaluate.py", "--workdir", workdir, "--data_dir", tfds_dir, *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_speed_benchmark_synthetic_needs_no_tfds_tensorboardx_or_mlxtend(tmp_path):
    """--synthetic on a machine without tensorflow(_datasets), tensorboardX and mlxtend (as on a
    bare GPU image): their imports are made to fail, and jaxae never needs them."""
    out = tmp_path / "bench.json"
    blocked = ("tensorflow", "tensorflow_datasets", "tensorboardX", "mlxtend")
    code = (f"import sys, runpy; sys.modules.update(dict.fromkeys({blocked!r})); "
            f"sys.argv = ['speed.py', '--synthetic', '--presets', 'mlp_burda', '--batch_sizes', '64', "
            f"'--steps_per_call', '3', '--seconds', '0.2', '--dtype', 'bfloat16', '--json', {str(out)!r}]; "
            "runpy.run_path('benchmarks/speed.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        report = json.load(f)
    assert report["synthetic"] and report["dtype"] == "bfloat16"
    assert set(report["matmul_peaks_flops_per_sec"]) == {"float32", "bfloat16"}
    (row,) = report["rows"]
    assert row["dtype"] == "bfloat16" and row["train_images_per_sec"] > 0 and 0 < row["fraction_of_peak"] < 1.5
    assert row["xla_train_call_mib"] > 0 and row["rss_growth_mib"] >= 0 and row["device_peak_mib"] is None


def test_speed_benchmark_runs(tfds_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = run("benchmarks/speed.py", "--data_dir", tfds_dir, "--presets", "mlp_flax", "--batch_sizes", 32,
                 "--steps_per_call", 5, "--seconds", 0.2, "--json", out)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        report = json.load(f)
    assert [r["preset"] for r in report["rows"]] == ["mlp_flax"]
    for row in report["rows"]:
        assert row["train_images_per_sec"] > 0 and 0 < row["fraction_of_peak"] < 1.5
        assert row["train_flops_per_image"] > 1e6
