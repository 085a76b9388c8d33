"""What a user of the installed package meets when loading data from disk: bad folders, files and arrays give
errors that name the file or the shape, and `load_dataset` dispatches a folder and an .npz to the right loader.
The notebook nbs/06_data.ipynb checks the loaders' numbers; this file checks them as a user calls them."""
import pickle

import numpy as np
import pytest
import torch
from conftest import ROOT  # noqa: F401  (the repository root, put on sys.path by conftest)
from PIL import Image

from ddpm_nb.data import ArrayDataset, load_array, load_dataset, load_image_folder, scale_to_unit


def png(path, shape=(4, 4), value=0):
    "Write a uint8 PNG of the given (h, w) or (h, w, c) shape, creating the folder."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder: .*nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no image files \(\.png, \.jpg, \.jpeg, any case\) in .*" + tmp_path.name):
        load_image_folder(tmp_path)


def test_file_instead_of_folder(tmp_path):
    f = png(tmp_path / "one.png")
    with pytest.raises(ValueError, match="one.png is not a folder"):
        load_image_folder(f)


def test_corrupt_png(tmp_path):
    png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG but then garbage, not an image")
    with pytest.raises(ValueError, match=r"cannot read .*b\.png as an image"):
        load_image_folder(tmp_path)


def test_truncated_png(tmp_path):
    good = png(tmp_path / "a.png", (16, 16, 3), 200)
    (tmp_path / "b.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match=r"cannot read .*b\.png as an image"):
        load_image_folder(tmp_path)


def test_mixed_sizes_name_both_files(tmp_path):
    png(tmp_path / "a.png", (4, 4))
    png(tmp_path / "b.png", (5, 7))
    with pytest.raises(ValueError, match=r"images differ in size: .*a\.png is 4×4, .*b\.png is 7×5 \(width×height\)"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=3).shape == (1, 3, 3)


def test_mixed_channels(tmp_path):
    png(tmp_path / "a.png", (4, 4))
    png(tmp_path / "b.png", (4, 4, 3))
    with pytest.raises(ValueError, match=r"images differ in channels: .*a\.png has 1, .*b\.png has 3"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, channels=3).shape == (3, 4, 4)


def test_folder_round_trip_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for cls in ("b_dogs", "a_cats"):
        for i in range(2):
            a = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
            Image.fromarray(a).save(png(tmp_path / cls / f"{i}.png"))
            written[f"{cls}/{i}.png"] = a
    ds = load_image_folder(tmp_path)
    want = scale_to_unit(torch.from_numpy(np.stack([written[k] for k in sorted(written)])).permute(0, 3, 1, 2))
    assert torch.equal(ds.x, want)
    assert ds.classes == ["a_cats", "b_dogs"] and ds.labels.tolist() == [0, 0, 1, 1] and ds.n_levels == 256
    x, y = ds[3]
    assert x.shape == (3, 3, 4) and y.dtype == torch.int64 and y.item() == 1


def test_wrong_shape_npy(tmp_path):
    np.save(tmp_path / "odd.npy", np.zeros((3, 5, 5, 7), np.uint8))
    with pytest.raises(ValueError, match=r"odd\.npy: cannot read shape \(3, 5, 5, 7\) as images or points"):
        load_array(tmp_path / "odd.npy")


def test_float_array_out_of_range(tmp_path):
    np.save(tmp_path / "pixels.npy", np.full((2, 4, 4), 255.0, np.float32))
    with pytest.raises(ValueError, match=r"pixels\.npy: float images must lie in \[-1, 1\], found values in \[255, 255\]"):
        load_array(tmp_path / "pixels.npy")


def test_object_npy_is_refused_without_unpickling(tmp_path):
    "An object array is a pickle inside a .npy: load_array must refuse it, and never run the pickle."
    class Boom:
        def __reduce__(self):   # unpickling this would raise; load_array must not get that far
            return (exec, ("raise RuntimeError('the pickle ran')",))
    np.save(tmp_path / "obj.npy", np.array([Boom(), None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy is an array of Python objects, stored as a pickle: load_array refuses pickles"):
        load_array(tmp_path / "obj.npy")
    (tmp_path / "raw.npy").write_bytes(pickle.dumps(np.zeros(3)))           # a plain pickle with a .npy name
    with pytest.raises(ValueError, match=r"raw\.npy as a NumPy array: it has neither the \.npy nor the \.npz signature"):
        load_array(tmp_path / "raw.npy")


def test_object_array_in_npz(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1], "a"], dtype=object))
    with pytest.raises(ValueError, match=r"obj\.npz \['x'\] is an array of Python objects"):
        load_array(tmp_path / "obj.npz")


def test_missing_array_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such file: .*gone\.npz"):
        load_array(tmp_path / "gone.npz")


def test_array_dataset_rejects_out_of_range_images():
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\], found values in \[0, 255\]"):
        ArrayDataset(torch.linspace(0, 255, 16).reshape(1, 1, 4, 4))


def test_load_dataset_dispatches_folder_and_npz(tmp_path):
    for i in range(3):
        png(tmp_path / "imgs" / f"{i}.jpg", (6, 6, 3), 50 * i)
    folder = load_dataset(tmp_path / "imgs")
    assert len(folder) == 3 and folder.shape == (3, 6, 6) and folder.labels is None and folder.name == "imgs"
    assert load_dataset(str(tmp_path / "imgs"), "all", size=4).shape == (3, 4, 4)

    x, y = np.arange(5 * 8 * 8, dtype=np.uint8).reshape(5, 8, 8), np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "set.npz", x=x, y=y)
    ds = load_dataset(tmp_path / "set.npz")
    assert torch.equal(ds.x, scale_to_unit(x).unsqueeze(1)) and ds.labels.tolist() == y.tolist() and ds.num_classes == 3

    with pytest.raises(ValueError, match="no held-out part"):
        load_dataset(tmp_path / "set.npz", split="test")
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: .*other\.npz"):
        load_dataset(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="unknown dataset 'cifar': the names are digits, digits16, digits32, swissroll, moons, gaussians, mnist"):
        load_dataset("cifar")


def test_builtin_item_format():
    "Every built-in set yields (float32 x, int64 scalar label), label -1 when unlabelled."
    for name, shape, label in [("digits", (1, 8, 8), None), ("swissroll", (2,), -1), ("moons", (2,), None)]:
        ds = load_dataset(name, "test")
        x, y = ds[0]
        assert x.dtype == torch.float32 and tuple(x.shape) == shape == ds.shape
        assert y.dtype == torch.int64 and y.ndim == 0 and (label is None or y.item() == label)
