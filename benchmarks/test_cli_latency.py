"""How fast the CLI answers: each command in a fresh process, as a ratio to a bare `python -c pass`.

    .venv/bin/pytest benchmarks/test_cli_latency.py --benchmark-columns=min,median,rounds

The ratio (in each benchmark's extra_info, and printed with -s) cancels most of the machine's
own speed and load; a command that imports torch (seconds) stands out at once. Nothing here is
asserted: tests/test_plugins.py checks that these commands import no torch.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The console script, as users run it (`python -m` would put the working directory on sys.path).
VLBENCH = shutil.which("vlbench", path=str(Path(sys.executable).parent))
COMMANDS = {
    "--help": ["--help"],
    "list": ["list"],
    "plugins": ["plugins"],
    "leaderboard": ["leaderboard", "--results", str(REPO / "results"), "--output", "{tmp}/LEADERBOARD.md"],
}
ROUNDS = 5


def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def startup():
    """Holds the median time of a bare interpreter start (test_python_startup sets it): the ratios' unit."""
    return {}


def test_python_startup(benchmark, startup):
    benchmark.group = "CLI latency (fresh process)"
    benchmark.pedantic(run, args=([sys.executable, "-c", "pass"],), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    startup["median"] = benchmark.stats.stats.median


@pytest.mark.skipif(VLBENCH is None, reason="the vlbench console script is not installed next to this python")
@pytest.mark.parametrize("command", COMMANDS)
def test_command(benchmark, startup, command, tmp_path):
    if "median" not in startup:
        pytest.skip("run test_python_startup first (run the whole file)")
    benchmark.group = "CLI latency (fresh process)"
    argv = [VLBENCH, *(a.format(tmp=tmp_path) for a in COMMANDS[command])]
    benchmark.pedantic(run, args=(argv,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    ratio = benchmark.stats.stats.median / startup["median"]
    benchmark.extra_info["ratio_to_python_startup"] = round(ratio, 1)
    print(f"\nvlbench {command}: {benchmark.stats.stats.median:.2f} s, {ratio:.1f} x python -c pass")
