"""The `liverbench` dispatcher: help, unknown commands, routing of `predict`."""
import subprocess
import sys

from benchmark import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_target_exists():
    for name, (target, _) in cli.COMMANDS.items():
        assert callable(cli._load(target)), name


def test_data_subcommands_exist():
    from datamodules import commands as data_cli

    for name, (target, _) in data_cli.SUBCOMMANDS.items():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func)), name


def test_python_dash_m_benchmark_runs():
    proc = subprocess.run([sys.executable, "-m", "benchmark", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: liverbench" in proc.stdout
