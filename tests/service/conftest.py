"""Real processes: a redis-server for the session (the engine and gateway fixtures, `engine_url` and
`start_gateway`, are in tests/conftest.py: the training tests use them too), and test videos.

Fixtures only: helpers live in tests/utils/. A test that uses `engine_url` or `start_gateway` (directly or through
another fixture) is marked `engine` by tests/conftest.py, so the fast tier deselects it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.utils.redis_server import RedisServer
from videoqa.video.testing import make_test_video


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "short": make_test_video(d / "short.mp4", seconds=4, fps=12, gop=12),
        "other": make_test_video(d / "other.mp4", seconds=6, fps=10, gop=20, size=(128, 96)),
        "long": make_test_video(d / "long.mp4", seconds=30, fps=8, gop=40),
    }
