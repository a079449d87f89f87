"""What the loop does besides stepping (jaxae.training.hooks): the metrics log."""

import json

from jaxae.training import hooks


def test_truncate_keeps_whole_records_up_to_the_step_and_drops_cut_lines(tmp_path):
    """A run killed (or out of disk) mid-write leaves a cut last line; records after the
    checkpoint it resumes from are dropped; a whole record without its newline gets one, so
    the next append starts a new line."""
    log = hooks.MetricsLog(str(tmp_path))
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 4, "x": 1}\n{"step": 8, "x": 2}\nnot json\n["step"]\n{"step": 12, "x": 3}\n{"step": 9')
    log.truncate(8)
    assert path.read_text() == '{"step": 4, "x": 1}\n{"step": 8, "x": 2}\n'
    path.write_text('{"step": 4, "x": 1}')
    log.truncate(8)
    log.evaluation({"step": 8, "y": 2.0}, {"nelbo": 1.0}, 8)
    log.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 4, "x": 1}, {"step": 8, "y": 2.0}]


def test_progress_line_gives_the_speed_only_when_it_was_measured():
    train, test = {"loss": 101.234}, {"nelbo": 99.5, "bpd": 0.18309, "recon": 80.0, "kl": 19.5}
    assert hooks.describe("test", train, test, 1234.4) == (
        "train loss 101.23, test nelbo 99.50 nats (0.1831 bits/dim), recon 80.00, kl 19.50, 1,234 images/s")
    # Every step so far in the first (compiling) call: no rate rather than "nan images/s".
    assert hooks.describe("test", train, test, float("nan")) == (
        "train loss 101.23, test nelbo 99.50 nats (0.1831 bits/dim), recon 80.00, kl 19.50")
    assert hooks.describe("test", train, {"loss": 3.0, "recon": 2.5}, float("nan")) == (
        "train loss 101.23, test loss 3.00, recon 2.50 nats")
