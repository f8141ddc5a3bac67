"""``eupe vlm``: EUPE as the vision tower of LLaVA-1.5-style VLMs on transformers (build, train, eval, demo)."""

from __future__ import annotations

import argparse

from .common import add_shipped_config_args, print_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("vlm", help="EUPE inside LLaVA-style VLMs: build, train, eval, demo",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="vlm_command", metavar="VLM_COMMAND", required=True)

    build = commands.add_parser("build", help="EUPE checkpoint + causal LM -> an untrained LLaVA-1.5 folder",
                                description="Assembles tower, LLaVA-1.5 projector (Linear-GELU-Linear) and a language "
                                            "model into a transformers folder (AutoModelForImageTextToText).")
    build.add_argument("--eupe-model", default="eupe_vits16", help="registered EUPE model (default: %(default)s)")
    build.add_argument("--eupe-weights", default=None,
                       help="EUPE checkpoint (path, URL, hf://); 'random' for an untrained tower "
                            "(default: the released weights)")
    build.add_argument("--language-model", required=True, help="causal LM: hub id or local folder")
    build.add_argument("--gguf-file", default=None, help="a GGUF file inside --language-model (dequantised)")
    build.add_argument("--feature-layer", choices=("last_norm", "last", "penultimate"), default="last_norm",
                       help="which tower tokens feed the projector (default: %(default)s)")
    build.add_argument("--image-size", type=int, default=384, help="tower input size (default: %(default)s)")
    build.add_argument("--chat-template", default=None,
                       help="a Jinja chat-template file, for LMs that have none (default: the LM's own)")
    build.add_argument("--standardize-features", default=None, metavar="IMAGES",
                       help="a folder of images (e.g. the stage-a training images) to fit a per-channel "
                            "standardisation of the tower's tokens on (default: the tokens as they are)")
    build.add_argument("--output", required=True, help="folder to write")
    build.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty folder")
    build.set_defaults(func=run_build)

    train = commands.add_parser("train", help="stage (a) projector or (b) projector + LLM on transformers.Trainer",
                                epilog="Under torchrun the run is distributed as any Trainer run; a rerun with the "
                                       "same output_dir resumes.")
    add_shipped_config_args(train, "vlm", "data=llava_v1_5_mix665k.json")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("eval", help="answer a benchmark's questions and score them as lmms-eval does",
                                   epilog="Writes results.json, predictions.jsonl and config.yaml; a rerun resumes.")
    evaluate.add_argument("--model", required=True, help="a VLM folder (eupe vlm build / train output)")
    evaluate.add_argument("--benchmark", required=True,
                          help="pope, textvqa, gqa, scienceqa_img, realworldqa or mme, read from --data-root")
    evaluate.add_argument("--data-root", required=True, help="the benchmark's files in their released layout")
    evaluate.add_argument("--output-dir", required=True, help="where results.json and predictions.jsonl go")
    evaluate.add_argument("--config", default=None, help="YAML file with more settings (see the saved config.yaml)")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override one setting, e.g. --set limit=100 (repeatable)")
    evaluate.set_defaults(func=run_eval)

    demo = commands.add_parser("demo", help="a real small VLM run on this machine: trained EUPE tower vs random tower "
                                            "vs the LM alone, POPE F1 and VQA accuracy on held-out pictures")
    add_shipped_config_args(demo, "demo", "student_weights=runs/demo/stage3/student.pt", default="vlm")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..demo.vlm import format_vlm_table, load_vlm_demo_config, run_vlm_demo

    cfg = load_vlm_demo_config(args.config, args.overrides)
    if args.print_config:
        return print_config(cfg)
    print(format_vlm_table(run_vlm_demo(cfg)))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..vlm.evaluate import VLMEvalConfig, format_results_table, run_vlm_eval

    overrides = [f"model={args.model}", f"benchmark={args.benchmark}", f"data_root={args.data_root}", *args.overrides]
    cfg = load_config(VLMEvalConfig, args.config, overrides)
    results = run_vlm_eval(cfg, args.output_dir)
    print(format_results_table([results]))
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.images import list_images
    from ..vlm import build_vlm

    standardize = [r.path for r in list_images(args.standardize_features)[0]] if args.standardize_features else []
    random_tower = args.eupe_weights == "random"
    template = Path(args.chat_template).read_text() if args.chat_template else None
    built = build_vlm(args.eupe_model, None if random_tower else args.eupe_weights, args.language_model, args.output,
                      eupe_pretrained=not random_tower, feature_layer=args.feature_layer, image_size=args.image_size,
                      gguf_file=args.gguf_file, chat_template=template, standardize_images=standardize,
                      overwrite=args.overwrite)
    print(f"VLM folder: {built.path} ({built.model.config.image_seq_length} visual tokens per image)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..vlm.train import load_train_config, train_stage

    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        return print_config(cfg)
    print(f"trained VLM: {train_stage(cfg)}")
    return 0
