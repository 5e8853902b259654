"""Regenerate the figure gallery: ``docs/figures/*.pdf`` (+ ``.csv`` data, ``.png`` previews) and
``docs/gallery.md`` listing each figure with the exact command that made it.

    python -m prunescope.explorer.figures.gallery [--docs DOCS] [--only NAME ...]

Token figures read a recipe with a token budget the script writes beside them
(``docs/figures/shapes_vit_tokens.json``); ticket figures read a tiny lottery run (digits MLP, 2
rounds, 1 epoch) the script makes in a temporary directory (``RUN`` in the listed commands).

Each entry runs the ``prunescope figure`` command line in-process; previews are rendered from the
PDF with poppler's ``pdftoppm`` (what a reader of the paper sees), or by the same command with a
``.png`` output where poppler is not installed.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Entry:
    """One gallery figure: its file stem, a caption and the ``prunescope figure`` arguments
    (``{recipe}``: the token recipe, ``{run}``: the lottery run directory)."""

    stem: str
    caption: str
    args: tuple[str, ...]


#: The token budget of the token figures' recipe: EViT keeping half the patches after block 0.
TOKEN_RECIPE = "shapes_vit_tokens.json"
TOKEN_STRATEGY, TOKEN_KEEP = "cls_attention", 0.5
#: The lottery run of the ticket figures (``prunescope ticket``), made in a temporary directory.
TICKET_ARGS = ("ticket", "--model", "digits_mlp", "--rounds", "2", "--epochs", "1")
RUN = "RUN"


GALLERY = (
    Entry("sensitivity", "Accuracy vs weight sparsity of six criteria on the digits MLP (single column).",
          ("sensitivity", "--model", "digits_mlp")),
    Entry("layer_sensitivity", "Each layer of the digits CNN pruned alone by magnitude (single column).",
          ("layer_sensitivity", "--model", "digits_cnn", "--sparsity", "0", "0.2", "0.4", "0.6", "0.8", "0.9",
           "0.95", "0.98")),
    Entry("allocation", "Per-layer sparsity LAMP allocates on the digits CNN at 90% (single column).",
          ("allocation", "--model", "digits_cnn", "--method", "lamp", "--sparsity", "0.9")),
    Entry("allocation_kept", "Kept vs dense weights per layer, global magnitude at 90% on the digits MLP.",
          ("allocation", "--model", "digits_mlp", "--method", "global_magnitude", "--sparsity", "0.9",
           "--option", "quantity=kept")),
    Entry("mask", "Mask of the digits MLP's first layer, LAMP at 80% (single column).",
          ("mask", "--model", "digits_mlp", "--method", "lamp", "--sparsity", "0.8", "--option", "layer=fc1.weight")),
    Entry("mask_conv", "Mask of a convolution (rows: output channels; columns: input channel x 3x3), "
                       "2:4 semi-structured, double column.",
          ("mask", "--model", "digits_cnn", "--method", "nm", "--option", "layer=conv2.weight", "--width", "double")),
    Entry("speed", "Dense torch vs sparse kernels per layer, magnitude at 95% on the digits MLP "
                   "(batch 64, Numba CPU, one thread each; machine-dependent).",
          ("speed", "--model", "digits_mlp", "--method", "magnitude", "--sparsity", "0.95",
           "--option", "repeats=20", "--option", "threads=1")),
    Entry("speedup", "Measured speed-up beside the FLOPs reduction, same setting (machine-dependent).",
          ("speed", "--model", "digits_mlp", "--method", "magnitude", "--sparsity", "0.95",
           "--option", "repeats=20", "--option", "threads=1", "--option", "quantity=speedup")),
    Entry("token_map", "Patch tokens EViT keeps (clear) and drops per block on one shapes-ViT test image, "
                       "keeping 50% after block 0 (single column).",
          ("token_map", "--model", "shapes_vit", "--recipe", "{recipe}", "--option", "image=3")),
    Entry("attention_map", "CLS attention to each patch per block (mean over the 4 heads), same image and budget; "
                           "white: the patch's token is gone.",
          ("attention_map", "--model", "shapes_vit", "--recipe", "{recipe}", "--option", "image=3")),
    Entry("retention_map", "How often each patch position survives each block over the 600 test images, "
                           "EViT at 50% (attention keeps the centre, where the shapes are).",
          ("retention_map", "--model", "shapes_vit", "--recipe", "{recipe}")),
    Entry("token_accuracy", "Measured accuracy vs patch tokens kept for three token strategies on the shapes ViT.",
          ("token_accuracy", "--model", "shapes_vit", "--option", "strategies=cls_attention,random,merge",
           "--option", "keeps=0.2,0.3,0.4,0.5,0.6,0.8,1.0")),
    Entry("embedding", "PCA of the digits MLP's penultimate features, dense vs magnitude at 90%, coloured by "
                       "whether pruning flips the prediction.",
          ("embedding", "--model", "digits_mlp", "--method", "magnitude", "--sparsity", "0.9",
           "--option", "method=pca")),
    Entry("cka", "Linear CKA between dense and pruned activations of every layer, digits CNN at 90% magnitude.",
          ("cka", "--model", "digits_cnn", "--method", "magnitude", "--sparsity", "0.9")),
    Entry("geometry_hist", "Angle, feature norm and logit margin, dense vs pruned (magnitude 90%), clean vs "
                           "Gaussian noise, digits MLP.",
          ("geometry_hist", "--model", "digits_mlp", "--method", "magnitude", "--sparsity", "0.9")),
    Entry("ticket_accuracy", "Ticket vs random re-init vs random mask of a tiny run (digits MLP, 2 rounds, "
                             "1 epoch each; RUN: see the top of the page).",
          ("ticket_accuracy", "--model", "digits_mlp", "--option", "run={run}")),
    Entry("mask_overlap_matrix", "Jaccard overlap of the tickets, one-shot criteria at the last ticket's "
                                 "sparsity and the current setting (global magnitude 36%).",
          ("mask_overlap_matrix", "--model", "digits_mlp", "--method", "global_magnitude", "--sparsity", "0.36",
           "--option", "run={run}")),
    Entry("overlap_by_layer", "Per-layer overlap of the ticket with magnitude's one-shot mask vs sparsity, "
                              "beside the random expectation.",
          ("overlap_by_layer", "--model", "digits_mlp", "--option", "run={run}", "--option", "versus=magnitude")),
    Entry("mask_overlay", "The largest layer's weights kept by the last ticket only, by global magnitude only, or both.",
          ("mask_overlay", "--model", "digits_mlp", "--option", "run={run}")),
)


def _command(entry: Entry, figures: Path, root: Path, run: str = RUN) -> list[str]:
    pdf, csv = figures / f"{entry.stem}.pdf", figures / f"{entry.stem}.csv"
    recipe = _shown(figures / TOKEN_RECIPE, root)
    args = [a.replace("{recipe}", recipe).replace("{run}", run) for a in entry.args]
    return ["figure", *args, "--out", _shown(pdf, root), "--csv", _shown(csv, root), "--quiet"]


def write_token_recipe(figures: Path) -> Path:
    """The recipe of the token figures: the shapes ViT, dense weights, ``TOKEN_STRATEGY`` at ``TOKEN_KEEP``."""
    from prunescope.explorer.engine import Explorer
    from prunescope.explorer.tokens.figures import with_token_budget

    path = figures / TOKEN_RECIPE
    path.write_text(with_token_budget(Explorer.from_sample("shapes_vit"), TOKEN_STRATEGY, TOKEN_KEEP).recipe())
    return path


@contextlib.contextmanager
def ticket_run(needed: bool):
    """A tiny lottery run (``TICKET_ARGS``) in a temporary directory, removed afterwards (None if not needed)."""
    if not needed:
        yield RUN
        return
    from prunescope.explorer.cli import main

    with tempfile.TemporaryDirectory(prefix="prunescope-gallery-") as tmp:
        out = str(Path(tmp) / "run")
        print(f"gallery: prunescope {shlex.join([*TICKET_ARGS, '--out', out])}", file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):
            if main([*TICKET_ARGS, "--out", out]) != 0:
                raise RuntimeError("gallery: the lottery run failed")
        yield out


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _preview(entry: Entry, figures: Path, root: Path, dpi: int, run: str = RUN) -> None:
    from prunescope.explorer.cli import main

    pdf, png = figures / f"{entry.stem}.pdf", figures / f"{entry.stem}.png"
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", str(dpi), "-singlefile", str(pdf), str(png.with_suffix(""))],
                       check=True)
    else:
        print("gallery: pdftoppm (poppler-utils) not found; rendering the PNG preview with matplotlib", file=sys.stderr)
        args = _command(entry, figures, root, run)
        out = args.index("--out")
        args[out + 1] = str(png)
        del args[args.index("--csv"): args.index("--csv") + 2]
        if main([*args, "--dpi", str(dpi)]) != 0:
            raise RuntimeError(f"gallery: the PNG preview of {entry.stem} failed")


def _markdown(entries: Sequence[Entry], figures: Path, docs: Path, root: Path) -> str:
    lines = [
        "# Figure gallery",
        "",
        "Every figure below was made by the command under it (run from the repository root) and is",
        "regenerated by `make figures` (`python -m prunescope.explorer.figures.gallery`). The PDFs are",
        "vector figures at the paper's column width (3.25 in single, 6.75 in double) with embedded",
        "TrueType fonts; the PNGs are 200 dpi previews rendered from them with `pdftoppm`. The CSV",
        "next to each figure is the data it draws (the same table the app's view shows). Each method",
        "has one colour (Okabe-Ito), marker and dash in every figure and in the app.",
        "",
        "`prunescope figure --list` lists the figures and their options. The token figures read",
        f"`{_relative(figures / TOKEN_RECIPE, root)}` (a recipe: EViT keeping {TOKEN_KEEP:.0%} of the patches after",
        f"block 0); `{RUN}` in the ticket figures' commands is a run made by `prunescope {shlex.join(TICKET_ARGS)} "
        f"--out {RUN}`.",
        "",
    ]
    for entry in entries:
        base = Path(_relative(figures, docs))
        command = "prunescope " + shlex.join(_command(entry, figures, root)[:-1])
        lines += [
            f"## {entry.stem}",
            "",
            entry.caption,
            "",
            f"![{entry.stem}]({(base / (entry.stem + '.png')).as_posix()})",
            "",
            f"[PDF]({(base / (entry.stem + '.pdf')).as_posix()}) · [data (CSV)]({(base / (entry.stem + '.csv')).as_posix()})",
            "",
            "```sh",
            command,
            "```",
            "",
        ]
    return "\n".join(lines)


def _relative(path: Path, docs: Path) -> str:
    try:
        return str(path.resolve().relative_to(docs.resolve()))
    except ValueError:
        return str(path.resolve())


def build_gallery(docs: Path = Path("docs"), only: Sequence[str] = (), dpi: int = 200) -> list[Path]:
    """Regenerate the gallery under ``docs``; returns the files written."""
    from prunescope.explorer.cli import main

    root = Path.cwd()
    figures = docs / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    entries = [e for e in GALLERY if not only or e.stem in only]
    unknown = sorted(set(only) - {e.stem for e in GALLERY})
    if unknown:
        raise ValueError(f"unknown gallery entries {unknown}; known: {', '.join(e.stem for e in GALLERY)}")
    written = []
    if any("{recipe}" in a for e in entries for a in e.args):
        written.append(write_token_recipe(figures))
    with ticket_run(any("{run}" in a for e in entries for a in e.args)) as run:
        for entry in entries:
            command = _command(entry, figures, root, run)
            print(f"gallery: prunescope {shlex.join(command)}", file=sys.stderr)
            if main(command) != 0:
                raise RuntimeError(f"gallery: figure {entry.stem} failed")
            _preview(entry, figures, root, dpi, run)
            written += [figures / f"{entry.stem}.{ext}" for ext in ("pdf", "csv", "png")]
    page = docs / "gallery.md"
    page.write_text(_markdown(GALLERY, figures, docs, root) + "\n")
    return [*written, page]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m prunescope.explorer.figures.gallery``: regenerate the gallery."""
    parser = argparse.ArgumentParser(prog="python -m prunescope.explorer.figures.gallery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder (default ./docs)")
    parser.add_argument("--only", nargs="+", default=(), metavar="STEM", help="regenerate only these entries")
    parser.add_argument("--dpi", type=int, default=200, help="resolution of the PNG previews (default 200)")
    args = parser.parse_args(argv)
    try:
        files = build_gallery(args.docs, args.only, args.dpi)
    except ValueError as err:
        parser.error(str(err))
    print(f"gallery: wrote {len(files)} files under {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
