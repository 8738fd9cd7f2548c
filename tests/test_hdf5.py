"""HDF5 writer and generator on real images: round trip, no overwrite, no half-written file."""
from __future__ import annotations

import numpy as np
import pytest

from edgecv.data import load
from edgecv.errors import DataError
from edgecv.train.hdf5 import HDF5DatasetWriter, read_imageset, write_imageset


@pytest.fixture(scope="module")
def digits():
    ds = load("mnist")
    return ds.images[:300], ds.labels[:300]


def test_round_trip(tmp_path, digits):
    x, y = digits
    path = write_imageset(tmp_path / "d.h5", x, y, list("0123456789"))
    back = read_imageset(path)
    assert np.array_equal(back.images, x) and np.array_equal(back.labels, y)
    assert back.label_names == list("0123456789")
    # ...and it loads through --data like any other data set.
    assert len(load(path)) == 300


def test_refuses_to_overwrite(tmp_path, digits):
    x, y = digits
    write_imageset(tmp_path / "d.h5", x, y, ["a"])
    with pytest.raises(DataError, match="exists"):
        HDF5DatasetWriter(tmp_path / "d.h5", x.shape)
    write_imageset(tmp_path / "d.h5", x[:10], y[:10], ["a"], overwrite=True)
    assert len(read_imageset(tmp_path / "d.h5")) == 10


def test_crash_mid_write_leaves_no_file(tmp_path, digits):
    x, y = digits
    with pytest.raises(RuntimeError):
        with HDF5DatasetWriter(tmp_path / "d.h5", x.shape, buf_size=50) as w:
            w.add(x[:100], y[:100])
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_short_write_is_discarded(tmp_path, digits):
    x, y = digits
    w = HDF5DatasetWriter(tmp_path / "d.h5", x.shape)
    w.add(x[:10], y[:10])
    with pytest.raises(DataError, match="10 rows of the 300"):
        w.close()
    assert list(tmp_path.iterdir()) == []

