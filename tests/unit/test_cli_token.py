"""The token never travels on a command line (every user of the machine reads those with `ps`): `--token` is
refused with the way to do it, and a token file is read only if its owner alone can read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.client import ClientConfigError, read_token_file, resolve

runner = CliRunner()
NO_TOKEN = {"HPCGW_URL": "http://127.0.0.1:9", "HPCGW_TOKEN": "", "HPCGW_TOKEN_FILE": ""}


def _token_file(tmp_path: Path, mode: int, text: str = "file-token\n") -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("command", [["status", "abcd"], ["jobs"], ["cancel", "abcd"], ["algorithms"]])
def test_a_token_on_the_command_line_is_refused(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--token", "secret-token"], env=NO_TOKEN)
    assert result.exit_code == 2
    assert "HPCGW_TOKEN" in result.output and "--token-file" in result.output
    assert "secret-token" not in result.output


def test_a_token_file_only_its_owner_can_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HPCGW_URL", "HPCGW_TOKEN", "HPCGW_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    private = _token_file(tmp_path, 0o600)
    assert read_token_file(private) == "file-token"
    assert resolve("http://x", None, tmp_path / "none.toml", token_file=private) == ("http://x", "file-token")
    monkeypatch.setenv("HPCGW_TOKEN_FILE", str(private))
    assert resolve("http://x", None, tmp_path / "none.toml") == ("http://x", "file-token")
    assert resolve("http://x", "arg", tmp_path / "none.toml") == ("http://x", "arg")  # an argument (Python) first
    for mode in (0o640, 0o604, 0o620):
        private.chmod(mode)
        with pytest.raises(ClientConfigError, match="readable by you only"):
            read_token_file(private)


def test_a_token_file_that_is_a_link_a_fifo_or_empty_is_refused(tmp_path: Path) -> None:
    target = _token_file(tmp_path, 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(ClientConfigError, match="token file"):
        read_token_file(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ClientConfigError, match="not a regular file"):
        read_token_file(fifo)  # refused at once: no writer is waited for
    with pytest.raises(ClientConfigError, match="empty"):
        read_token_file(_token_file(tmp_path, 0o600, "\n"))
    with pytest.raises(ClientConfigError, match="No such file"):
        read_token_file(tmp_path / "missing")


def test_the_cli_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    shared = _token_file(tmp_path, 0o644)
    result = runner.invoke(app, ["status", "abcd", "--token-file", str(shared)], env=NO_TOKEN)
    assert result.exit_code == 2 and "readable by you only" in result.output
