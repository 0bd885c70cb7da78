"""report.md and cv.md: every image they link exists and is a valid PNG."""

import json
import os
import re
import struct

import numpy as np
import pytest

from mtl_ser.data import splits
from mtl_ser.experiments import cv
from mtl_ser.outputs import report
from mtl_ser.training import analysis, loop

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, f"{path}: not a PNG"
    length, kind = struct.unpack(">I4s", head[8:16])
    assert (length, kind) == (13, b"IHDR"), f"{path}: no IHDR chunk first"
    return struct.unpack(">II", head[16:24])


def linked_files(markdown_path: str) -> list[str]:
    """The local files a markdown page links or embeds, as absolute paths."""
    text = open(markdown_path).read()
    folder = os.path.dirname(markdown_path)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [os.path.join(folder, t) for t in targets if "://" not in t]


def check_linked_images(markdown_path: str) -> list[str]:
    """Asserts every linked file exists and every .png is valid; returns names."""
    names = []
    for path in linked_files(markdown_path):
        assert os.path.exists(path), f"{markdown_path} links missing {path}"
        if path.endswith(".png"):
            width, height = png_size(path)
            assert width > 0 and height > 0, path
        names.append(os.path.relpath(path, os.path.dirname(markdown_path)))
    return names


def test_png_size_reads_the_header_and_rejects_other_files(tmp_path):
    path = tmp_path / "x.png"
    ihdr = struct.pack(">I4sII", 13, b"IHDR", 640, 480)
    path.write_bytes(PNG_SIGNATURE + ihdr + b"\x08\x02\x00\x00\x00")
    assert png_size(str(path)) == (640, 480)
    path.write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(AssertionError, match="not a PNG"):
        png_size(str(path))


def test_report_of_a_tiny_run(smoke_config, tmp_path):
    workdir = str(tmp_path / "run")
    results = loop.train_and_evaluate(smoke_config, workdir)
    path = report.write_report(workdir, smoke_config, results)
    names = check_linked_images(path)
    classes = smoke_config.emotion_classes.split(",")
    expected = {"curves.png", "tsne.png"}
    expected |= {f"gradcam_{c}.png" for c in classes}
    expected |= {
        f"confusion_{s}_{t}.png" for s in ("val", "test") for t in ("emotion", "gender")
    }
    assert set(names) == expected
    text = open(path).read()
    assert "| test | emotion | ua |" in text  # The tables are still there.
    assert "| true \\ predicted | anger | happiness | neutral | sadness |" in text
    assert "The trunk's embeddings of the 16 test utterances" in text

    # --mode=evaluate writes the same analysis again.
    first = analysis.load(os.path.join(workdir, analysis.FILENAME))
    os.remove(os.path.join(workdir, analysis.FILENAME))
    loop.evaluate_workdir(smoke_config, workdir)
    again = analysis.load(os.path.join(workdir, analysis.FILENAME))
    assert sorted(again) == sorted(first)
    for name, value in first.items():
        if value.dtype.kind == "U":
            np.testing.assert_array_equal(again[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(again[name], value, rtol=1e-5, err_msg=name)

    # report.figures off: the tables alone.
    smoke_config.report.figures = False
    path = report.write_report(workdir, smoke_config, results)
    assert check_linked_images(path) == []
    assert "| true \\ predicted | anger |" in open(path).read()


def _fold_results(rng, classes) -> dict:
    """A results.json of one fold with random test metrics and confusion."""
    confusion = rng.integers(0, 5, (len(classes), len(classes))).tolist()
    return {
        "scalars": {"test/ua/emotion": float(rng.uniform()), "test/wa/emotion": 0.5},
        "confusion": {"test": {"emotion": confusion}},
        "classes": {"emotion": classes},
    }


def test_cv_report_links_valid_pngs(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["anger", "happiness", "neutral", "sadness"]
    folds = [splits.Fold(f"fold{i}", (f"v{i}",), (f"t{i}",)) for i in range(3)]
    for i, fold in enumerate(folds):
        folder = cv.fold_dir(str(tmp_path), i, fold)
        os.makedirs(folder)
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump(_fold_results(rng, classes), f)
        with open(os.path.join(folder, "report.md"), "w") as f:
            f.write("# The fold's run report\n")  # Training writes the real one.
    summary = cv.summarise(folds, str(tmp_path))
    cv.write(summary, str(tmp_path), "emotion")
    names = check_linked_images(str(tmp_path / "cv.md"))
    assert sorted(names) == sorted(
        ["cv_ua.png", "cv_confusion_emotion.png"]
        + [f"cv_confusion_emotion_fold{i}.png" for i in range(3)]
        + [f"fold{i:02d}_fold{i}/report.md" for i in range(3)]
    )
    assert "| fold0 |" in open(tmp_path / "cv.md").read()  # The tables stay.
