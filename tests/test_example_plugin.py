"""The example third-party package (plugins/vlbench-kmeans), built by pip and installed as its
own distribution into a private directory: discovered, conforming, benchmarked by `vlbench run`."""
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlbench.plugins import Registry
from vlbench.testing import check_condenser
from plugin_dist import install_dist
from test_plugins import LISTING

PACKAGE = Path(__file__).resolve().parents[1] / "plugins" / "vlbench-kmeans"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Where the built distribution is installed (`pip install --target`)."""
    tmp = tmp_path_factory.mktemp("kmeans")
    source = shutil.copytree(PACKAGE, tmp / "source", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target)]
    done = subprocess.run([*pip, str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def kit_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VLBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "kit-cache"))


def env_with(*paths, **extra):
    """The environment of a subprocess that sees `paths` first.

    One OpenMP thread: these models are tiny, and two spinning threads per process on a busy
    2-core machine made each training step 5 s instead of 0.05 s.
    """
    path = os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def run_cli(*argv, env):
    done = subprocess.run([sys.executable, "-m", "vlbench.cli", *argv], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_discovered_through_its_entry_point(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    reg = Registry()
    cls = reg.get("condenser", "kmeans")
    assert reg.provenance("condenser", "kmeans") == {"name": "kmeans", "distribution": "vlbench-kmeans", "version": "0.1.0"}
    assert Path(inspect.getfile(cls)).is_relative_to(site)  # the installed copy, not the source tree


def test_listing_it_imports_neither_its_condenser_nor_torch(site):
    done = subprocess.run([sys.executable, "-c", LISTING, "vlbench_kmeans.condenser"], env=env_with(site),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "vlbench-kmeans" in done.stdout and done.stdout.splitlines()[-1] == "IMPORTED []"


def test_passes_the_conformance_kit(site, monkeypatch, kit_cache):
    monkeypatch.syspath_prepend(str(site))
    check_condenser(Registry().get("condenser", "kmeans"), budget=10, options={"iterations": 5})


@pytest.mark.slow
def test_its_own_test_suite_passes_against_the_installed_package(site, tmp_path):
    tests = shutil.copytree(PACKAGE / "tests", tmp_path / "tests")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          env=env_with(site), capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.slow
def test_vlbench_run_benchmarks_it_next_to_a_broken_plugin(site, tmp_path):
    from vlbench.data.synthscenes import generate

    broken = tmp_path / "broken-site"
    install_dist(broken, "vlbench-broken", {"vlb_broken_run": "raise ImportError('missing licence')\n"}, {"broken": "vlb_broken_run"})
    generate(tmp_path / "data", 0, train=40, val=0, test=10, pretrain=0)
    config = {"data_root": str(tmp_path / "data"), "evals": 1, "backbone_options": {"pretrained": None},
              "protocol": {"steps": 5, "batch_size": 16}, "condenser_options": {"iterations": 5}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    env = env_with(site, broken, VLBENCH_CACHE=str(tmp_path / "cache"))
    results = tmp_path / "results"

    done = run_cli("run", "--condenser", "kmeans", "--budget", "10", "--config", str(tmp_path / "tiny.yaml"),
                   "--results", str(results), env=env)
    assert done.stderr.count("vlbench-broken") == 1
    [path] = (results / "records").glob("*.json")
    record = json.loads(path.read_text())
    assert record["condenser"]["distribution"] == "vlbench-kmeans" and record["condenser"]["version"] == "0.1.0"
    assert record["condensed"]["num_pairs"] == 10
    assert "kmeans 0.1.0" in run_cli("leaderboard", "--results", str(results), env=env).stdout
