"""Worker settings that reach Faust's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.contracts.topics import Topics
from streams.engine.agents import build_app
from streams.settings import Settings

TOPICS = Topics.load(Path(__file__).resolve().parent.parent / "topics.yaml", "t.")


def test_standby_replicas_reach_faust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGNALBOX_STANDBY_REPLICAS sets Faust's table standbys (default 1; 0 trades failover
    time for CPU: README, Benchmarks)."""
    monkeypatch.setenv("SIGNALBOX_STANDBY_REPLICAS", "0")
    assert build_app(Settings(datadir=tmp_path / "a"), TOPICS).app.conf.table_standby_replicas == 0
    monkeypatch.delenv("SIGNALBOX_STANDBY_REPLICAS")
    assert build_app(Settings(datadir=tmp_path / "b"), TOPICS).app.conf.table_standby_replicas == 1
    monkeypatch.setenv("SIGNALBOX_STANDBY_REPLICAS", "-1")
    with pytest.raises(ValueError):
        Settings()


def test_producer_linger_and_schedule_window_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGNALBOX_PRODUCER_LINGER_MS reaches Faust's producer (default 5 ms) and
    SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS the schedule step (default 2 ms): 0 for the lowest
    latency on idle jobs, at some throughput (README, Benchmarks)."""
    assert build_app(Settings(datadir=tmp_path / "a"), TOPICS).app.conf.producer_linger == pytest.approx(0.005)
    monkeypatch.setenv("SIGNALBOX_PRODUCER_LINGER_MS", "0")
    monkeypatch.setenv("SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS", "0")
    settings = Settings(datadir=tmp_path / "b")
    assert settings.schedule_batch_window_ms == 0
    assert build_app(settings, TOPICS).app.conf.producer_linger == 0
    for name in ("SIGNALBOX_PRODUCER_LINGER_MS", "SIGNALBOX_SCHEDULE_BATCH_WINDOW_MS"):
        monkeypatch.setenv(name, "-1")
        with pytest.raises(ValueError):
            Settings()
        monkeypatch.setenv(name, "0")


def test_the_thread_switch_interval_is_1_ms_unless_set_and_must_be_positive(monkeypatch):
    assert Settings().gil_switch_interval_ms == 1.0
    monkeypatch.setenv("SIGNALBOX_GIL_SWITCH_INTERVAL_MS", "0")
    with pytest.raises(ValueError, match="gil_switch_interval_ms"):
        Settings()
