"""Listing image sources, decoding every awkward image kind to RGB, and skipping undecodable files."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eupe.data.images import (
    ImageDecodeError,
    ImageFolderDataset,
    ImageRecord,
    ImageSourceError,
    collate_skipping_failures,
    list_images,
    load_image,
)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _gradient(w: int = 24, h: int = 16) -> Image.Image:
    x = np.zeros((h, w, 3), np.uint8)
    x[..., 0] = np.arange(w)[None, :] * 10
    x[..., 1] = np.arange(h)[:, None] * 15
    x[..., 2] = 128
    return Image.fromarray(x, "RGB")


# ------------------------------------------------------------------------------------------------ listing


def test_folder_tree_classes_sorted_and_root_images_unlabelled(tmp_path):
    _save(_gradient(), tmp_path / "zebra" / "b.png")
    _save(_gradient(), tmp_path / "zebra" / "sub" / "a.png")
    _save(_gradient(), tmp_path / "ant" / "x.jpg")
    _save(_gradient(), tmp_path / "loose.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "empty_class").mkdir()
    records, classes = list_images(tmp_path)
    assert classes == ["ant", "zebra"]
    rel = [(str(Path(r.path).relative_to(tmp_path)), r.label, r.class_name) for r in records]
    assert rel == [
        ("loose.png", None, None),
        ("ant/x.jpg", 0, "ant"),
        ("zebra/b.png", 1, "zebra"),
        ("zebra/sub/a.png", 1, "zebra"),
    ]
    assert list_images(tmp_path) == (records, classes)  # deterministic


def test_glob_and_list_files(tmp_path):
    for name in ("b.png", "a.png", "c.jpg"):
        _save(_gradient(), tmp_path / "imgs" / name)
    records, classes = list_images(str(tmp_path / "imgs" / "*.png"))
    assert [Path(r.path).name for r in records] == ["a.png", "b.png"] and classes == []
    assert all(r.label is None for r in records)

    (tmp_path / "labels.csv").write_text("path,label\nimgs/c.jpg,dog\nimgs/a.png,cat\n\n# comment\nimgs/b.png\n")
    records, classes = list_images(tmp_path / "labels.csv")
    assert classes == ["cat", "dog"]
    assert [(Path(r.path).name, r.label, r.class_name) for r in records] == [
        ("c.jpg", 1, "dog"), ("a.png", 0, "cat"), ("b.png", None, None)]
    assert Path(records[0].path) == tmp_path / "imgs" / "c.jpg"

    (tmp_path / "labels.txt").write_text(f"{tmp_path / 'imgs' / 'a.png'}\t3\nimgs/b.png\t1\n")
    records, classes = list_images(tmp_path / "labels.txt")
    assert classes == ["0", "1", "2", "3"]
    assert [(r.label, r.class_name) for r in records] == [(3, "3"), (1, "1")]


def test_several_sources_merge_classes_by_name_and_leave_single_files_unlabelled(tmp_path):
    _save(_gradient(), tmp_path / "one" / "cat" / "a.png")
    _save(_gradient(), tmp_path / "two" / "dog" / "b.png")
    _save(_gradient(), tmp_path / "two" / "cat" / "c.png")
    loose = _save(_gradient(), tmp_path / "misc" / "d.png")
    records, classes = list_images([tmp_path / "one", loose, tmp_path / "two"])
    assert classes == ["cat", "dog"]
    assert [(Path(r.path).name, r.label, r.class_name) for r in records] == [
        ("a.png", 0, "cat"), ("d.png", None, None), ("c.png", 0, "cat"), ("b.png", 1, "dog")]
    assert list_images([tmp_path / "one"]) == list_images(tmp_path / "one")  # one source: as given alone


def test_ambiguous_sources_are_refused(tmp_path):
    _save(_gradient(), tmp_path / "one" / "cat" / "a.png")
    _save(_gradient(), tmp_path / "other" / "x.png")
    with pytest.raises(ImageSourceError, match=r"cat/a\.png is listed by two sources"):
        list_images([tmp_path / "one", str(tmp_path / "one" / "*" / "a.png")])
    with pytest.raises(ImageSourceError, match="given twice"):
        list_images([tmp_path / "one", tmp_path / "one"])
    (tmp_path / "numbered.txt").write_text("other/x.png\t3\n")
    with pytest.raises(ImageSourceError, match="labels its images with numbers"):
        list_images([tmp_path / "one", tmp_path / "numbered.txt"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images([tmp_path / "one", tmp_path / "missing.png"])


def test_missing_and_empty_sources_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSourceError, match="holds no images"):
        list_images(tmp_path / "empty")
    with pytest.raises(ImageSourceError, match="matches no files"):
        list_images(str(tmp_path / "*.jpg"))
    (tmp_path / "list.txt").write_text("\n# nothing\n")
    with pytest.raises(ImageSourceError, match="names no images"):
        list_images(tmp_path / "list.txt")


# ------------------------------------------------------------------------------------------------ decoding


def test_rgb_conversions_of_awkward_modes(tmp_path):
    rgb = _gradient()
    ref = np.asarray(rgb).astype(int)

    cmyk = load_image(_save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg", quality=100))
    assert cmyk.mode == "RGB" and cmyk.size == rgb.size
    assert np.abs(np.asarray(cmyk).astype(int) - ref).mean() < 12  # lossy JPEG, same picture

    gray = load_image(_save(rgb.convert("L"), tmp_path / "gray.png"))
    g = np.asarray(rgb.convert("L"))
    assert gray.mode == "RGB" and np.array_equal(np.asarray(gray), np.stack([g] * 3, -1))

    rgba_arr = np.concatenate([np.asarray(rgb), np.zeros((16, 24, 1), np.uint8)], -1)
    rgba_arr[:, :12, 3] = 255  # left half opaque, right half fully transparent
    rgba = load_image(_save(Image.fromarray(rgba_arr, "RGBA"), tmp_path / "rgba.png"))
    out = np.asarray(rgba)
    assert rgba.mode == "RGB"
    assert np.array_equal(out[:, :12], np.asarray(rgb)[:, :12]) and (out[:, 12:] == 255).all()

    values = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 170)  # spans 0..65110
    deep = load_image(_save(Image.fromarray(values), tmp_path / "deep16.png"))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert deep.mode == "RGB" and np.abs(np.asarray(deep)[..., 0].astype(int) - expected).max() <= 1
    assert np.asarray(deep).max() > 200  # scaled, not clipped to 255 / saturated

    pal = load_image(_save(rgb.convert("P"), tmp_path / "pal.png"))
    assert pal.mode == "RGB" and pal.size == rgb.size


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    img = _gradient(24, 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    out = load_image(path)
    assert out.size == (16, 24)
    expected = np.asarray(img.transpose(Image.Transpose.ROTATE_270)).astype(int)
    assert np.abs(np.asarray(out).astype(int) - expected).mean() < 6


@pytest.mark.parametrize("kind", ["zero_byte", "truncated", "text_as_jpg", "missing"])
def test_undecodable_files_raise_with_reason(tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "zero_byte":
        path.write_bytes(b"")
        match = "empty file"
    elif kind == "truncated":
        buf = io.BytesIO()
        _gradient(64, 64).save(buf, format="JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        match = "truncated"
    elif kind == "text_as_jpg":
        path.write_text("hello, I am a text file\n" * 20)
        match = "not an image"
    else:
        match = "cannot read"
    with pytest.raises(ImageDecodeError, match=match) as info:
        load_image(path)
    assert info.value.path == str(path)
    again = pickle.loads(pickle.dumps(info.value))  # crosses DataLoader worker boundaries intact
    assert again.path == info.value.path and again.reason == info.value.reason


# ------------------------------------------------------------------------------------------------ dataset


def test_dataset_and_collate_skip_failures_in_workers(tmp_path):
    good = [_save(_gradient(), tmp_path / f"ok{i}.png") for i in range(3)]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    records = [ImageRecord(str(good[0])), ImageRecord(str(bad)), ImageRecord(str(good[1])),
               ImageRecord(str(good[2]))]

    def to_tensor(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)

    ds = ImageFolderDataset(records, to_tensor)
    assert ds[0][1] == 0 and ds[0][0].shape == (3, 16, 24)
    assert ds[1][0] is None and "empty" in ds[1][2]
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0,
                                               collate_fn=collate_skipping_failures))
    assert batches[0].indices.tolist() == [0] and batches[0].images.shape == (1, 3, 16, 24)
    assert batches[0].failures == [(1, "empty file (0 bytes)")]
    assert batches[1].indices.tolist() == [2, 3] and batches[1].failures == []
    all_bad = collate_skipping_failures([ds[1]])
    assert all_bad.images is None and all_bad.indices.numel() == 0


def test_transform_errors_become_skip_markers(tmp_path):
    path = _save(_gradient(), tmp_path / "ok.png")

    def picky(img: Image.Image) -> torch.Tensor:
        raise ValueError("image too small")

    item = ImageFolderDataset([ImageRecord(str(path))], picky)[0]
    assert item[0] is None and item[1] == 0 and item[2] == "transform failed: ValueError: image too small"


def test_images_over_pils_bomb_limit_give_one_eupe_message_and_no_pil_warning(tmp_path, monkeypatch, caplog):
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    large = _save(_gradient(40, 40), tmp_path / "large.png")  # 1600 pixels: PIL warns, still decodes
    huge = _save(_gradient(50, 50), tmp_path / "huge.png")  # 2500 > 2 * 1000: PIL refuses
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(large).size == (40, 40)
        with pytest.raises(ImageDecodeError, match="image too large"):
            load_image(huge)
    assert [w.message for w in caught] == []
    assert [r.getMessage() for r in caplog.records] == [
        f"large image {large}: 40x40 pixels, over PIL's decompression-bomb limit of 1000 pixels; decoding it anyway "
        "(PIL.Image.MAX_IMAGE_PIXELS sets the limit)"]
    assert warnings.filters == filters  # PIL's warning is not silenced beyond the loader
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(large)
