"""Shared setup of the benchmark suites: what produced the numbers is saved with them.

Run every suite with `.venv/bin/pytest benchmarks` (docs/benchmarks.md has the numbers).
"""
import torch


def _device() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def pytest_report_header(config):
    return f"vlbench benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, device {_device()}"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), device=_device())
