import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from vlbench.storage import atomic_path, atomic_save_tensors, atomic_write_text


def test_files_get_umask_permissions_not_mkstemp_0600(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import vlbench.storage as storage

        importlib.reload(storage)  # the module reads the umask once
        storage.atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_tensors_round_trip_and_replace(tmp_path):
    path = tmp_path / "sub" / "t.safetensors"
    atomic_save_tensors({"a": torch.arange(6).view(2, 3).t()}, path)  # non-contiguous input is fine
    atomic_save_tensors({"a": torch.ones(2)}, path)
    assert torch.equal(load_file(str(path))["a"], torch.ones(2))


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    atomic_write_text(tmp_path / "f", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "f").read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def test_concurrent_writers_get_distinct_temp_files(tmp_path):
    with atomic_path(tmp_path / "f") as a, atomic_path(tmp_path / "f") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "f").read_text() == "a"  # the last rename wins; neither write is torn


def test_file_lock_excludes_a_second_holder_until_released(tmp_path):
    import multiprocessing

    from vlbench.storage import file_lock

    lock = tmp_path / "locks" / "stage.lock"
    ctx = multiprocessing.get_context("spawn")
    with file_lock(lock) as held:
        assert held
        with ctx.Pool(1) as pool:
            assert pool.apply(_try_lock, (lock,)) is False  # another process cannot take it
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_lock, (lock,)) is True  # released with the file


def _try_lock(path):
    from vlbench.storage import file_lock

    with file_lock(path, wait=False) as held:
        return held
