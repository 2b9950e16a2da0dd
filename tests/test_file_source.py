"""The config watcher reports every outcome: a new config, a problem, or a loader failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshgate.loader import ConfigError, LoadedConfig
from xds_server.sources import file as file_source
from xds_server.sources.file import FileConfigSource

GOOD = """listeners:
  - name: l
    port: 8080
    virtual_hosts:
      - name: v
        routes:
          - match: {prefix: /}
            direct_response: {status: 200}
"""


class Recorder:
    def __init__(self) -> None:
        self.configs: list[LoadedConfig] = []
        self.errors: list[ConfigError] = []

    async def on_config(self, loaded: LoadedConfig) -> None:
        self.configs.append(loaded)

    def on_error(self, err: ConfigError, digest: str) -> None:
        self.errors.append(err)


async def test_new_config_then_a_yaml_value_python_cannot_build(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD)
    rec = Recorder()
    source = FileConfigSource(path, rec.on_config, rec.on_error)
    await source.check_once()
    assert len(rec.configs) == 1 and rec.errors == []
    await source.check_once()  # unchanged: nothing new
    assert len(rec.configs) == 1
    path.write_text(GOOD + "extra: 2024-13-01\n")
    await source.check_once()
    [err] = rec.errors
    assert "month must be in 1..12" in str(err) and ":9:8:" in str(err)


async def test_an_unexpected_loader_failure_is_reported_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str, source: str) -> LoadedConfig:
        raise RuntimeError("loader bug")

    monkeypatch.setattr(file_source, "parse_config", broken)
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD)
    rec = Recorder()
    await FileConfigSource(path, rec.on_config, rec.on_error).check_once()
    [err] = rec.errors
    assert "cannot load the file: RuntimeError('loader bug')" in str(err)


async def test_a_missing_file_is_reported_once(tmp_path: Path) -> None:
    rec = Recorder()
    source = FileConfigSource(tmp_path / "nope.yaml", rec.on_config, rec.on_error)
    await source.check_once()
    await source.check_once()
    [err] = rec.errors
    assert "file not found" in str(err)
