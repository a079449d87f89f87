"""Atomic file writes and safe .npz reads (jaxae.io)."""

import errno
import os

import numpy as np
import pytest

from jaxae import io
from jaxae.errors import ConfigError, WriteError


def test_atomic_path_renames_the_temporary_file_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with io.atomic_path(str(target)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(target)  # Same folder: rename is atomic.
        with open(tmp, "w") as f:
            f.write("new")
        assert target.read_text() == "old"  # Not replaced until the block ends.
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_exception_leaves_the_old_file_intact_and_no_temporary_file(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with io.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise error
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_an_exception_before_anything_is_written_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        with io.atomic_path(str(tmp_path / "new.txt")):
            raise ValueError("nothing written")
    assert os.listdir(tmp_path) == []


def test_suffix_lets_writers_pick_the_format(tmp_path):
    """np.savez appends .npz unless the name ends in it: the suffix keeps the temporary name exact."""
    target = tmp_path / "arrays.npz"
    with io.atomic_path(str(target), suffix=".npz") as tmp:
        assert tmp.endswith(".npz")
        np.savez(tmp, a=np.arange(3))
    assert os.listdir(tmp_path) == ["arrays.npz"]
    np.testing.assert_array_equal(io.read_npz(str(target), "test")["a"], [0, 1, 2])


def test_write_text(tmp_path):
    io.write_text(str(tmp_path / "a.json"), '{"x": 1}\n')
    io.write_text(str(tmp_path / "a.json"), '{"x": 2}\n')
    assert (tmp_path / "a.json").read_text() == '{"x": 2}\n'
    assert os.listdir(tmp_path) == ["a.json"]
    missing = str(tmp_path / "missing" / "a.json")
    with pytest.raises(WriteError, match=f"^cannot write '{missing}': No such file or directory \\(ENOENT\\)$"):
        io.write_text(missing, "x")
    assert os.listdir(tmp_path) == ["a.json"]


def test_failure_reason_names_the_os_error():
    assert io.failure_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device (ENOSPC)"
    # TensorStore (Orbax) reports the errno inside a ValueError's message.
    tensorstore = ValueError('RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file "/x/": '
                             "Failed to write 5 bytes to file 7: File too large [os_error_code='27']")
    assert io.failure_reason(tensorstore) == "File too large (EFBIG)"
    assert io.failure_reason(ValueError("first line\nsecond")) == "first line"


def test_a_full_disk_is_one_write_error_and_the_old_file_stays(tmp_path):
    """/dev/full fails every write with ENOSPC, as a full disk does: the temporary file the
    write goes to is made a link to it."""
    target = tmp_path / "out.txt"
    target.write_text("old")
    tmp = f"{target}.tmp.{os.getpid()}"
    os.symlink("/dev/full", tmp)
    with pytest.raises(WriteError) as error:
        io.write_text(str(target), "new " * 10000)
    assert str(error.value) == f"cannot write '{target}': No space left on device (ENOSPC)"
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_read_npz_refuses_what_is_not_plain_arrays(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.ones(2, np.float32), b=np.array(3))
    arrays = io.read_npz(str(tmp_path / "ok.npz"), "--thing")
    assert sorted(arrays) == ["a", "b"] and arrays["a"].dtype == np.float32 and int(arrays["b"]) == 3
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    (tmp_path / "text.npz").write_text("hello")
    for name in ("pickled.npz", "text.npz", "missing.npz"):
        path = str(tmp_path / name)
        with pytest.raises(ConfigError, match=f"^--thing '{path}' is not a readable .npz of plain arrays \\(") as e:
            io.read_npz(path, "--thing")
        assert "\n" not in str(e.value)
