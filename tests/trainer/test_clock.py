"""The run's clock (issue 13, point 9): the ETA follows the recent pace, and a resumed run's time
adds up from what its earlier sessions recorded, even a killed one."""

from __future__ import annotations

import json

import pytest

from trainer.clock import RECENT_LOGS, Pace, runtime_before
from trainer.protocol import encode


def _average_since_start_eta(times: list[float], step: int, max_steps: int) -> float:
    """What the trainer computed before: elapsed / steps done x steps left."""
    return times[step] / step * (max_steps - step)


def test_eta_follows_a_tenfold_slowdown_within_a_few_steps():
    max_steps, fast, slow = 200, 0.1, 1.0
    pace, times, now = Pace(), [0.0], 0.0
    pace.mark(0, now)
    for step in range(1, 101):  # 100 steps at 0.1 s, then every step takes 1 s
        now += fast if step <= 50 else slow
        times.append(now)
        pace.mark(step, now)
        if step == 50:
            assert pace.eta(max_steps - step) == pytest.approx(150 * fast)
        if step == 50 + RECENT_LOGS:
            # five slow steps later the ETA is the slow pace times the steps left
            assert pace.eta(max_steps - step) == pytest.approx((max_steps - step) * slow)
            # the old estimate still promised most of the fast pace: 0:26 with 2:25 to go
            assert _average_since_start_eta(times, step, max_steps) < 0.2 * (max_steps - step) * slow
    assert pace.eta(max_steps - 100) == pytest.approx(100 * slow)


def test_eta_halfway_into_the_slowdown_is_already_most_of_the_way():
    pace = Pace()
    for step in range(11):
        pace.mark(step, step * 0.1)
    for step in range(11, 14):  # three slow steps of the five-log window
        pace.mark(step, 1.0 + (step - 10) * 1.0)
    per_step = pace.seconds_per_step()
    assert per_step == pytest.approx((2 * 0.1 + 3 * 1.0) / 5)
    assert per_step > 0.6


def test_eta_counts_logged_intervals_of_several_steps():
    pace = Pace()
    for i, step in enumerate(range(0, 50, 10)):  # logging_steps 10, one second per step
        pace.mark(step, 10.0 * i)
    assert pace.seconds_per_step() == pytest.approx(1.0)
    assert pace.eta(60) == pytest.approx(60.0)


def test_eta_is_unknown_before_the_first_interval_and_restarts_with_the_step_count():
    pace = Pace()
    assert pace.eta(10) is None
    pace.mark(5, 0.0)
    assert pace.eta(10) is None
    pace.mark(6, 2.0)
    assert pace.eta(10) == pytest.approx(20.0)
    pace.mark(3, 10.0)  # a new session from an earlier checkpoint
    assert pace.eta(10) is None


def test_a_new_run_has_no_time_before(tmp_path):
    assert runtime_before(tmp_path) == 0.0


def test_the_time_before_is_the_total_run_json_recorded(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"status": "stopped", "runtime_s": 43.5}))
    (tmp_path / "metrics.jsonl").write_text(
        encode("end", 8.0, status="stopped", steps=5, runtime_s=43.5, output_dir="x") + "\n")
    assert runtime_before(tmp_path) == 43.5


def test_a_killed_session_counts_up_to_its_last_step(tmp_path):
    """run.json holds the total up to the session before; the killed one left its steps."""
    (tmp_path / "run.json").write_text(json.dumps({"status": "stopped", "runtime_s": 20.0}))
    step = dict(epoch=0.1, loss=1.0, lr=0.0, grad_norm=1.0, tokens_per_s=1.0, peak_alloc_bytes=0,
                peak_reserved_bytes=0, rss_bytes=1)
    lines = [encode("end", 20.0, status="stopped", steps=5, runtime_s=20.0, output_dir="x"),
             encode("step", 3.0, step=6, runtime_s=23.0, **step),
             encode("step", 4.0, step=7, runtime_s=24.0, **step)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"v":1,"event":"step","t":5')  # torn
    assert runtime_before(tmp_path) == 24.0


@pytest.mark.parametrize("junk", ['{"runtime_s": "soon"}', '{"runtime_s": -3}', "[1]", "not json"])
def test_a_hand_edited_run_json_counts_as_nothing(tmp_path, junk):
    (tmp_path / "run.json").write_text(junk)
    assert runtime_before(tmp_path) == 0.0
