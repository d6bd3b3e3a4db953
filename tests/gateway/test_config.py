"""The configuration file: validated at start-up, with errors naming the key; dev tokens only in dev mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.support import HPCGW
from gateway.config import ConfigError, hash_token, load_config

REPO = Path(__file__).resolve().parent.parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return path


def base(dev_mode: bool = True, token: str = 'token = "team-a-dev-token"') -> str:
    return f"""
dev_mode = {str(dev_mode).lower()}
dataset_root = "data"
job_root = "jobs"
[teams.team-a]
partitions = ["team-a"]
account = "team-a"
[[tokens]]
user = "alice"
team = "team-a"
{token}
"""


def test_the_shipped_example_loads_and_resolves_paths() -> None:
    config = load_config(REPO / "config" / "example.toml")
    assert set(config.teams) == {"team-a", "team-b", "team-c"}
    assert config.teams["team-b"].partitions == ["team-b"]
    assert config.dataset_root == (REPO / ".hpcgw" / "datasets").resolve()
    assert config.database_url == f"sqlite:///{(REPO / '.hpcgw' / 'gateway' / 'gateway.db').resolve()}"
    assert all(t.token is None and t.token_sha256 for t in config.tokens)  # only hashes are kept
    assert {t.user for t in config.tokens if t.role == "admin"} == {"admin"}


def test_dev_tokens_are_refused_outside_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="development token of user 'alice' is refused outside dev_mode"):
        load_config(write(tmp_path, base(dev_mode=False)))
    with pytest.raises(ConfigError, match="shorter than 24"):
        load_config(write(tmp_path, base(dev_mode=False, token='token = "short"')))
    digest = hash_token("a-long-production-secret-123456")
    config = load_config(write(tmp_path, base(dev_mode=False, token=f'token_sha256 = "{digest}"')))
    assert config.tokens[0].digest == digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dev_mode = true\nnot toml [", "not valid TOML"),
        (base().replace('team = "team-a"', 'team = "team-z"'), "unknown team 'team-z'"),
        (base().replace('account = "team-a"', 'account = "team-a"\nmax_nodes = 0'), "teams.team-a.max_nodes"),
        (base() + "\nsurprise = 1\n", "surprise"),
        (base().replace('partitions = ["team-a"]', "partitions = []"), "teams.team-a.partitions"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_serve_exits_2_with_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [HPCGW, "serve", "--config", str(write(tmp_path, base(dev_mode=False)))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "hpcgw serve: error:" in proc.stderr and "refused outside dev_mode" in proc.stderr
    missing = subprocess.run(
        [HPCGW, "serve", "--config", str(tmp_path / "nope.toml")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_database_url_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCGW_DATABASE_URL", "postgresql+psycopg://hpcgw@db.example.org/hpcgw")
    assert (
        load_config(REPO / "config" / "example.toml").database_url == "postgresql+psycopg://hpcgw@db.example.org/hpcgw"
    )
