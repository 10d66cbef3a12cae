"""PNG provenance chunks: A1111's "parameters" plus limner's JSON request."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from limner.errors import InputFileError, InvalidRequestError
from limner.pngmeta import PngMetadata, read_png_metadata, save_png

INFOTEXT = (
    "a red fox, snow\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
    "Size: 64x48, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
)
REQUEST = {"prompt": "a red fox, snow", "steps": 20, "seed": 1234, "size": [64, 48]}


def _image(color: tuple[int, int, int] = (200, 30, 40)) -> Image.Image:
    image = Image.new("RGB", (64, 48), color)
    image.putpixel((3, 5), (1, 2, 3))
    return image


def _chunks(path: Path) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, read by hand so Pillow's view is not the only one."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _text_chunk(path: Path, key: str) -> tuple[bytes, bytes]:
    for kind, body in _chunks(path):
        if kind in (b"tEXt", b"iTXt", b"zTXt") and body.split(b"\0", 1)[0] == key.encode():
            return kind, body
    raise AssertionError(f"no {key} chunk")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    save_png(_image(), path, parameters=INFOTEXT, request_json=json.dumps(REQUEST))
    assert read_png_metadata(path) == PngMetadata(parameters=INFOTEXT, request=REQUEST)
    with Image.open(path) as image:
        assert image.size == (64, 48)
        assert image.getpixel((3, 5)) == (1, 2, 3)


def test_latin1_parameters_are_text_chunk_like_a1111(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    save_png(_image(), path, parameters=INFOTEXT + ", Note: café", request_json="{}")
    kind, body = _text_chunk(path, "parameters")
    assert kind == b"tEXt"
    assert body == b"parameters\0" + (INFOTEXT + ", Note: café").encode("latin-1")


def test_non_latin1_parameters_fall_back_to_itxt_like_a1111(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    prompt = "夜の東京, neon 🌃\nNegative prompt: ぼやけた\nSteps: 20, Sampler: Euler, Seed: 1"
    save_png(_image(), path, parameters=prompt, request_json=json.dumps({"prompt": "夜"}))
    kind, body = _text_chunk(path, "parameters")
    assert kind == b"iTXt"
    assert body.endswith(prompt.encode("utf-8"))  # uncompressed UTF-8, as add_text writes it
    # What A1111's PNG Info reads: Image.open(...).info["parameters"].
    with Image.open(path) as image:
        assert image.info["parameters"] == prompt
    assert read_png_metadata(path).parameters == prompt


def test_request_is_utf8_itxt(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    request_json = json.dumps({"prompt": "zürich, 東京"}, ensure_ascii=False)
    save_png(_image(), path, parameters=INFOTEXT, request_json=request_json)
    kind, body = _text_chunk(path, "limner")
    assert kind == b"iTXt"
    assert body == b"limner\0\0\0\0\0" + request_json.encode("utf-8")
    assert read_png_metadata(path).request == {"prompt": "zürich, 東京"}


def test_bytes_are_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    save_png(_image(), first, parameters=INFOTEXT, request_json=json.dumps(REQUEST))
    save_png(_image(), second, parameters=INFOTEXT, request_json=json.dumps(REQUEST))
    assert first.read_bytes() == second.read_bytes()
    kinds = [kind for kind, _ in _chunks(first)]
    assert b"tIME" not in kinds
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"


def test_image_info_is_not_copied(tmp_path: Path) -> None:
    image = _image()
    image.info["parameters"] = "stale text from an earlier save"
    image.info["comment"] = "something else"
    path = tmp_path / "out.png"
    save_png(image, path, parameters=INFOTEXT, request_json="{}")
    with Image.open(path) as reopened:
        assert set(reopened.text) == {"parameters", "limner"}
        assert reopened.text["parameters"] == INFOTEXT


def test_overwrite_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    save_png(_image(), path, parameters="old", request_json="{}")
    save_png(_image((0, 0, 0)), path, parameters=INFOTEXT, request_json="{}")
    assert read_png_metadata(path).parameters == INFOTEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_failed_replace_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    save_png(_image(), path, parameters="old", request_json="{}")
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        save_png(_image((0, 0, 0)), path, parameters=INFOTEXT, request_json="{}")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_invalid_request_json_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        save_png(_image(), path, parameters=INFOTEXT, request_json="{not json")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_png_without_chunks(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _image().save(path)
    assert read_png_metadata(path) == PngMetadata(parameters=None, request=None)


def test_reads_a1111_file_without_limner_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a1111.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    _image().save(path, pnginfo=info)
    assert read_png_metadata(path) == PngMetadata(parameters=INFOTEXT, request=None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        read_png_metadata(tmp_path / "nope.png")


def test_folder(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="folder"):
        read_png_metadata(tmp_path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, not a picture")
    with pytest.raises(InputFileError, match="not an image"):
        read_png_metadata(path)


def test_not_a_png(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    _image().save(path, format="JPEG")
    with pytest.raises(InputFileError, match="JPEG"):
        read_png_metadata(path)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    save_png(_image(), path, parameters=INFOTEXT, request_json="{}")
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(InputFileError, match="damaged PNG"):
        read_png_metadata(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [("{broken", "not valid JSON"), ("[1, 2]", "not a JSON object"), ('"text"', "not a JSON")],
)
def test_corrupt_request_chunk(tmp_path: Path, raw: str, message: str) -> None:
    path = tmp_path / "bad.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", INFOTEXT)
    info.add_itxt("limner", raw)
    _image().save(path, pnginfo=info)
    with pytest.raises(InputFileError, match=message):
        read_png_metadata(path)
