import sys
from pathlib import Path

import pytest

from launchers.slurm.shell import CommandError, CommandNotFoundError, CommandTimeoutError, run


def test_success_returns_output() -> None:
    assert run([sys.executable, "-c", "print('hi')"]).stdout == "hi\n"


def test_failure_carries_command_exit_code_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    err = info.value
    assert err.returncode == 3
    assert err.stderr == "boom"
    assert err.argv[0] == sys.executable
    assert "exited with 3" in str(err) and "boom" in str(err)


def test_check_false_returns_failure() -> None:
    assert run([sys.executable, "-c", "raise SystemExit(4)"], check=False).returncode == 4


def test_missing_program() -> None:
    with pytest.raises(CommandNotFoundError) as info:
        run(["hpcgw-no-such-program"])
    assert info.value.returncode == 127


def test_timeout() -> None:
    with pytest.raises(CommandTimeoutError) as info:
        run([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2)
    assert info.value.returncode == 124


def test_arguments_are_never_shell_interpreted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    out = run(["echo", f"$(touch {marker}); `touch {marker}`"]).stdout
    assert "$(touch" in out and not marker.exists()
