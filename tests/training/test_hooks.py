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
