import subprocess
import sys
from pathlib import Path

from quadgpt.cli import main


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
