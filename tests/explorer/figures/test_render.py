"""The paper renderer: vector output with text as text, column widths, formats, no global state."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib

import pytest

from prunescope.explorer.figures import data_csv, export, figure_bytes, figure_data, render, render_data, save_figure
from prunescope.explorer.figures.draw import ACCURACY_LABEL, SPARSITY_LABEL
from prunescope.explorer.figures.style import METHOD_STYLE, OKABE_ITO, WIDTHS
from prunescope.explorer.pruning import METHODS


@pytest.fixture(scope="module")
def sensitivity(mlp):
    return figure_data("sensitivity", mlp, methods=["magnitude", "lamp"], sparsities=[0.0, 0.5, 0.9])


def _pdf_streams(pdf: bytes) -> list[bytes]:
    streams = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            streams.append(zlib.decompress(match.group(1)))
        except zlib.error:
            streams.append(match.group(1))
    return streams


def test_pdf_is_a_column_wide_vector_figure_with_embedded_truetype(sensitivity, tmp_path):
    for width in ("single", "double"):
        path = save_figure(render_data("sensitivity", sensitivity, width), tmp_path / f"s_{width}.pdf")
        pdf = path.read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
        box = [float(v) for v in re.search(rb"/MediaBox \[\s*([\d.\s]+)\]", pdf).group(1).split()]
        assert box[2] == pytest.approx(72 * WIDTHS[width], abs=0.01)  # exactly the column width
        assert b"/FontFile2" in pdf and b"/Subtype /Image" not in pdf  # TrueType embedded, nothing raster
        content = b"\n".join(_pdf_streams(pdf))
        assert content.count(b" Tj") + content.count(b" TJ") >= 10  # text drawn as text operators
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
        assert SPARSITY_LABEL in text and ACCURACY_LABEL in text and "LAMP" in text


def test_svg_keeps_text_as_text(sensitivity):
    svg = figure_bytes(render_data("sensitivity", sensitivity), "svg")
    root = ET.fromstring(svg)
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert SPARSITY_LABEL in texts and ACCURACY_LABEL in texts and "Magnitude" in texts
    assert root.get("width") == "234pt"  # 3.25 in
    assert b"<image" not in svg


def test_png_has_the_width_times_dpi(sensitivity):
    png = figure_bytes(render_data("sensitivity", sensitivity, "double"), "png", dpi=100)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == round(6.75 * 100) and height == round(2.6 * 100)


def test_pgf_needs_latex_or_gives_a_clear_error(sensitivity):
    fig = render_data("sensitivity", sensitivity)
    if shutil.which("pdflatex") is None:
        with pytest.raises(ValueError, match="LaTeX"):
            figure_bytes(fig, "pgf")
    else:
        assert b"pgfpicture" in figure_bytes(fig, "pgf")


def test_unknown_suffix_lists_the_allowed(sensitivity, tmp_path):
    fig = render_data("sensitivity", sensitivity)
    with pytest.raises(ValueError, match=r"\.pdf, \.svg, \.pgf, \.png"):
        save_figure(fig, tmp_path / "fig.jpg")
    assert not (tmp_path / "fig.jpg").exists()


def test_rendering_leaves_rcparams_alone(mlp, tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    save_figure(render("allocation", mlp, width="double"), tmp_path / "a.svg")
    after = dict(matplotlib.rcParams)
    assert {k for k in before if before[k] != after[k]} == set()


def test_export_gives_the_app_the_same_figure_and_data(mlp):
    data = figure_data("allocation", mlp)
    assert export("allocation", data, "csv") == data_csv(data)
    assert export("allocation", data, "pdf").startswith(b"%PDF")
    assert b"<svg" in export("allocation", data, "svg")
    with pytest.raises(ValueError, match="csv"):
        export("allocation", data, "jpg")


def test_every_registered_method_has_its_own_colour_marker_and_dash():
    assert set(METHODS) <= set(METHOD_STYLE)
    styles = [METHOD_STYLE[m] for m in METHODS]
    # Okabe-Ito has 9 colours: the ticket (a mask source, drawn as points) shares one, never its marker
    assert len({s.colour for s in styles}) >= min(len(styles), len(OKABE_ITO))
    assert {s.colour for s in styles} <= set(OKABE_ITO.values())  # colour-blind safe palette
    assert len({s.marker for s in styles}) == len(styles)  # distinguishable in greyscale
    assert len({s.dash for s in styles if s.marker != "*"}) == len(styles) - 1  # N:M is a single point
    assert len({(s.colour, s.marker, s.dash) for s in styles}) == len(styles)


def test_style_and_figures_package_import_no_matplotlib():
    code = ("import sys; import prunescope.explorer.figures.style, prunescope.explorer.figures; "
            "prunescope.explorer.figures.list_figures(); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
