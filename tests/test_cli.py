import subprocess
import sys
from pathlib import Path

import pytest

from quadgpt.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_info_prints_every_kind_matched(capsys):
    assert main(["info", "--config", str(Path(__file__).resolve().parents[1] / "configs/gpt2-small.toml"), "--model.vocab_size=50257"]) == 0
    out = capsys.readouterr().out
    for kind in ("mlp", "swiglu", "quadratic", "kan"):
        assert f"\n{kind} " in out
    assert "124,439,808" in out  # GPT-2 small with the MLP


def test_info_bad_override_exits_2(capsys):
    assert main(["info", "--model.n_layr=2"]) == 2
    assert "Did you mean 'n_layer'" in capsys.readouterr().err


def test_unknown_command_suggests(capsys):
    assert main(["infos"]) == 2
    assert "Did you mean 'info'" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "quadgpt", "--help"], capture_output=True, text=True, check=True)
    assert "commands:" in out.stdout and "compare" in out.stdout


def every_command() -> list[list[str]]:
    """Every command and subcommand, read from the dispatch tables (a new one is covered)."""
    from eval.cli import SUBCOMMANDS
    from quadgpt.cli import COMMANDS

    return [[]] + [[name] for name in COMMANDS] + [["eval", name] for name in SUBCOMMANDS]


@pytest.mark.parametrize("command", every_command(), ids=lambda c: " ".join(c) or "quadgpt")
def test_every_help_prints_and_exits_0(capsys, command):
    """argparse formats help strings with %: a bare % crashed `quadgpt compare --help`."""
    try:
        code = main([*command, "--help"])  # the dispatch tables print their own usage
    except SystemExit as done:  # argparse exits after printing help
        code = done.code
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and len(out) > 100


@pytest.mark.parametrize("script", [["train.py"], ["sample.py"], ["-m", "data_prep"]], ids=" ".join)
def test_entry_point_scripts_print_help(script):
    run = subprocess.run([sys.executable, *script, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage:")
