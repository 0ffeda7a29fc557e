"""``python -m trainer``: run, export, make-demo, generate, lengths (DESIGN.md, "CLI contract")."""

from __future__ import annotations

import argparse
import sys

from trainer.config import FORMATS
from trainer.demo import ARCHS, SIZES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}; see `python -m {self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="trainer", description="Fine-tune a causal LM (full, LoRA, QLoRA); events on stdout.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="train; JSON-line events on stdout, commands on stdin")
    run.add_argument("--config", help="run config (.json or .yaml), TrainConfig field names")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last complete checkpoint")
    run.add_argument("--worker", metavar="RUN_DIR", help=argparse.SUPPRESS)  # set by the launcher for torchrun
    export = sub.add_parser("export", help="write the trained model (adapter, or merged with --merge)")
    export.add_argument("--run", required=True, metavar="RUN_DIR")
    export.add_argument("--merge", action="store_true", help="merge the adapter into the base weights")
    export.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    export.add_argument("--force", action="store_true", help="replace a previous export at --out (never anything else)")
    demo = sub.add_parser("make-demo", help="build an offline tiny model, tokenizer, dataset and run config")
    demo.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder, or a previous demo")
    demo.add_argument("--force", action="store_true", help="replace demo files edited since make-demo wrote them")
    demo.add_argument("--arch", default="llama", choices=ARCHS,
                      help="the tiny model's architecture: a dense Llama (default) or a mixture of experts")
    demo.add_argument("--size", default="tiny", choices=tuple(SIZES),
                      help="tiny (3.5M parameters, default), small (98M) or medium (0.77B): the larger ones "
                           "check memory on a GPU, where fixed costs would dwarf the tiny model")
    gen = sub.add_parser("generate", help="try a trained model: JSON-line requests on stdin, tokens as events")
    gen.add_argument("--run", metavar="RUN_DIR", help="a finished or stopped run: its base, adapter and data")
    gen.add_argument("--adapter", action="append", default=[], metavar="[NAME=]DIR",
                     help="a peft adapter folder to load on the same base (repeatable)")
    gen.add_argument("--model", metavar="DIR", help="the base for --adapter (default: the adapter's own base)")
    gen.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    lengths = sub.add_parser("lengths", help="tokens per example of a data set, as a run tokenizes it (JSON)")
    lengths.add_argument("--model", required=True, metavar="DIR", help="the model folder whose tokenizer runs")
    lengths.add_argument("--data", required=True, metavar="FILE", help="training data (.jsonl, .json, .csv, .parquet)")
    lengths.add_argument("--data-format", default="auto", choices=FORMATS)
    lengths.add_argument("--assistant-only-loss", action=argparse.BooleanOptionalAction, default=True,
                         help="chat data: examples without an assistant reply are skipped, as the run skips them")
    lengths.add_argument("--trust-remote-code", action="store_true", help="run the tokenizer's own code")
    args = parser.parse_args(argv)

    if args.command == "run":
        from trainer.run import main as run_main

        return run_main(args.config, args.resume, worker=args.worker)
    if args.command == "generate":
        from trainer.generate import main as generate_main

        return generate_main(args.run, args.adapter, args.model, args.device)
    if args.command == "lengths":
        from trainer.lengths import main as lengths_main

        return lengths_main(args.model, args.data, args.data_format, args.assistant_only_loss, args.trust_remote_code)
    if args.command == "export":
        from trainer.export import main as export_main

        return export_main(args.run, args.out, merge=args.merge, force=args.force)
    from trainer.demo import main as demo_main

    return demo_main(args.out, args.arch, force=args.force, size=args.size)


if __name__ == "__main__":
    raise SystemExit(main())
