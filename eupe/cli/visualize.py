"""``eupe visualize``: PNG pictures of a backbone's features.

  pca IMAGES          first 3 principal components of the patch tokens as RGB (optionally foreground only)
  retrieval QUERIES   each query's nearest gallery images by class-token cosine similarity
  segmentation IMAGES predictions of a head trained by `eupe eval segmentation` (--head .../head.pt), with a
                      legend of the classes present
  depth IMAGES        predictions of a head trained by `eupe eval depth` (--head .../head.pt), with a colour bar
                      in metres

IMAGES / QUERIES / --gallery: image files, folders, glob patterns or list files, one or several (merged as by
`eupe extract`; the same file twice is refused). The pca, segmentation and depth pictures are titled with the
model, its weights and the input size, and drawn with matplotlib (pip install 'eupe[plot]').
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..models import get_model_entry
from ..utils.optional import require
from ..utils.outputs import locked_output_dir
from .common import add_backbone_args, autocast_for, backbone_from_args, model_identity, resolve_device

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("visualize", help="PNG pictures: feature PCA, retrieval, head predictions",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, help_text in (("pca", "PCA of patch features as RGB"),
                            ("retrieval", "k-NN retrieval grid by class token"),
                            ("segmentation", "segmentation head predictions over the images"),
                            ("depth", "depth head predictions beside the images")):
        sub = kinds.add_parser(kind, help=help_text, description=help_text)
        sub.add_argument("images", nargs="+", metavar="IMAGES",
                         help="image files, folders, glob patterns or list files" +
                         (" (the queries)" if kind == "retrieval" else ""))
        sub.add_argument("--output-dir", required=True, help="folder for the PNG files")
        sub.add_argument("--max-images", type=int, default=16,
                         help="use at most this many images (default: %(default)s)")
        add_backbone_args(sub)
        sub.set_defaults(func=run)
    pca, retrieval = kinds.choices["pca"], kinds.choices["retrieval"]
    pca.add_argument("--size", type=int, default=448, help="short side of the resized images (default: %(default)s)")
    pca.add_argument("--foreground-threshold", type=float, default=None,
                     help="fit the PCA on tokens whose first component (scaled to 0..1) exceeds this, e.g. 0.5")
    retrieval.add_argument("--gallery", required=True, nargs="+",
                           help="images to search (files, folders, globs or list files)")
    retrieval.add_argument("-k", type=int, default=5, help="neighbours per query (default: %(default)s)")
    retrieval.add_argument("--size", type=int, default=224, help="input size of the backbone (default: %(default)s)")
    for kind, size, size_help in (("segmentation", None, "the head's evaluation size"), ("depth", 480, "%(default)s")):
        sub = kinds.choices[kind]
        sub.add_argument("--head", required=True, help=f"head.pt written by `eupe eval {kind}`")
        sub.add_argument("--size", type=int, default=size,
                         help=f"short side of the resized images (default: {size_help})")
    kinds.choices["segmentation"].add_argument("--alpha", type=_opacity, default=0.5,
                                               help="overlay opacity (default: %(default)s)")


def _opacity(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"an opacity from 0 (image only) to 1 (classes only), got {text}")
    return value


def backbone_label(args: argparse.Namespace) -> str:
    """How picture titles name the backbone of the command line: model, weights (a file by its name, an ``hf://``
    reference in full, random ones with their seed) and int8 quantisation."""
    if args.weights == "random":
        weights = f"random weights (seed {args.seed})"
    elif args.weights is None:
        entry = get_model_entry(args.model)
        weights = "released weights" + (f" {entry.pretrained.default_source}" if entry.pretrained else "")
    elif args.weights.startswith("hf://"):
        weights = f"weights {args.weights}"
    else:
        weights = f"weights {args.weights.rstrip('/').rsplit('/', 1)[-1]}"
    return f"{args.model}, {weights}" + (", int8" if getattr(args, "quantize", None) else "")


def run(args: argparse.Namespace) -> int:
    from ..data.images import ImageDecodeError, list_images, load_image
    from ..viz import depth_pictures, pca_pictures, retrieval_picture, save_png, segmentation_pictures

    for flag, value in (("--max-images", args.max_images), ("-k", getattr(args, "k", 1)), ("--size", args.size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.kind != "retrieval":  # before any model is loaded
        require("matplotlib", f"eupe visualize {args.kind} (titled pictures with legends and colour bars)")
    records = list_images(args.images)[0][: args.max_images]
    device = resolve_device(args.device)
    backbone, autocast = backbone_from_args(args), autocast_for(args, device)
    if args.size is not None and args.size < backbone.feature_stride:
        raise ValueError(f"--size {args.size} is smaller than one token of {args.model} ({backbone.feature_stride} "
                         f"pixels): give --size {backbone.feature_stride} or more")
    with locked_output_dir(args.output_dir, "eupe visualize") as out:
        if args.kind == "retrieval":
            gallery = list_images(args.gallery)[0]
            picture = retrieval_picture(backbone, records, gallery, args.k, args.size, device=device,
                                        autocast=autocast)
            print(f"visualize retrieval: {save_png(picture, out / 'retrieval.png')}")
            return 0
        images, kept = [], []
        for record in records:
            try:
                images.append(load_image(record.path))
                kept.append(record)
            except ImageDecodeError as err:
                logger.warning("skipping %s: %s", record.path, err.reason)
        if not images:
            raise ValueError(f"none of the {len(records)} images of {' '.join(args.images)} could be decoded")
        names, label = [r.path for r in kept], backbone_label(args)
        if args.kind == "pca":
            pictures = pca_pictures(backbone, images, args.size, args.foreground_threshold, device, autocast,
                                    names=names, model_label=label)
        elif args.kind == "segmentation":
            pictures = segmentation_pictures(backbone, args.head, images, args.size, args.alpha, device, autocast,
                                             identity=model_identity(args), names=names, model_label=label)
        else:
            pictures = depth_pictures(backbone, args.head, images, args.size, device, autocast,
                                      identity=model_identity(args), names=names, model_label=label)
        paths = [save_png(p, out / f"{i:03d}_{Path(r.path).stem}_{args.kind}.png")
                 for i, (p, r) in enumerate(zip(pictures, kept))]
    print(f"visualize {args.kind}: {len(paths)} pictures in {out}")
    return 0
