"""Indexed image sources: tar shards (round trip, bad members, brace ranges), list files, clear errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eupe.data.images import ImageDecodeError, ImageSourceError
from eupe.data.sources import FileSource, TarShardSource, decode_bytes, expand_braces, open_source


def png_bytes(value: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, files in samples.items():
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_decode_bytes_maps_errors_as_load_image_does(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 12x10 pixels is over twice that: a decompression bomb
    with pytest.raises(ImageDecodeError, match="mem:bomb: image too large"):
        decode_bytes(png_bytes(50), "mem:bomb")


def test_tar_shards_round_trip_and_bad_members_raise_decode_errors(tmp_path):
    write_shard(tmp_path / "s0.tar", {"a/x0": {"jpg": png_bytes(10, "JPEG"), "cls": b"3"},
                                      "a/x1": {"json": b"{}", "png": png_bytes(20)}})
    write_shard(tmp_path / "s1.tar", {"y.0": {"webp": png_bytes(30, "WEBP")}, "meta": {"txt": b"no image"},
                                      "broken": {"jpg": b"not a jpeg"}, "void": {"png": b""}})
    source = open_source(str(tmp_path / "s*.tar"))
    assert isinstance(source, TarShardSource) and len(source) == 5
    assert [m.key for m in source.members] == ["a/x0", "a/x1", "y", "broken", "void"]  # key = name before the first dot
    with pytest.raises(ImageDecodeError, match=r"s1.tar:broken: not an image"):
        source.load(3)
    with pytest.raises(ImageDecodeError, match="empty file"):
        source.load(4)
    truncated = write_shard(tmp_path / "t.tar", {"cut": {"png": png_bytes(40)[:-30]}})
    with pytest.raises(ImageDecodeError, match="t.tar:cut: corrupt image: truncated file"):
        open_source(truncated).load(0)
    assert source.load(1).getpixel((0, 0)) == (20, 20, 20)
    assert abs(source.load(0).getpixel((3, 3))[0] - 10) <= 2 and source.load(2).size == (10, 12)
    assert isinstance(open_source(tmp_path), TarShardSource)  # a folder of shards


def test_brace_ranges_name_shards_in_order(tmp_path):
    for i in (0, 1, 2):
        write_shard(tmp_path / f"train-{i:03d}.tar", {f"{i:06d}": {"png": png_bytes(i)}})
    assert expand_braces("a-{8..10}-{x,y}") == ["a-8-x", "a-8-y", "a-9-x", "a-9-y", "a-10-x", "a-10-y"]
    assert expand_braces("t-{000..002}.tar") == ["t-000.tar", "t-001.tar", "t-002.tar"]
    assert expand_braces("{literal}.tar") == ["{literal}.tar"]
    source = open_source(str(tmp_path / "train-{002..000}.tar"))
    assert [m.key for m in source.members] == ["000002", "000001", "000000"]
    with pytest.raises(FileNotFoundError, match=r"train-003.tar.*brace range"):
        open_source(str(tmp_path / "train-{000..003}.tar"))


def test_empty_and_missing_sources_are_one_clear_error(tmp_path):
    write_shard(tmp_path / "empty.tar", {"k": {"txt": b"x"}})
    with pytest.raises(ImageSourceError, match="hold no images"):
        open_source(tmp_path / "empty.tar")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ImageSourceError):
        open_source(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "missing-*.tar")
    with pytest.raises(FileNotFoundError, match="tar shards"):
        open_source(tmp_path / "missing-folder")
    (tmp_path / "fake.tar").write_bytes(b"\x1f\x8b not a plain tar" * 100)
    with pytest.raises(ImageSourceError, match="not an uncompressed tar shard"):
        open_source(tmp_path / "fake.tar")


def test_file_source_from_list_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "imgs" / f"{i:03d}.png")
    (tmp_path / "list.txt").write_text("imgs/000.png\nimgs/002.png\n")
    source = open_source(tmp_path / "list.txt")
    assert isinstance(source, FileSource) and len(source) == 2 and source.describe(1).endswith("002.png")
    assert source.load(0).mode == "RGB"
