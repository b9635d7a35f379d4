"""``melanoma-bench prepare``: build the decoded-image caches a run will read, and stop.

    melanoma-bench prepare --config paper --data-dir ~/data/melanoma    # e.g. on a CPU node

A later ``run`` (or several, on several GPUs) decodes nothing: it opens the caches.
"""
from __future__ import annotations

from melanoma.cli import options


def register(commands) -> None:
    parser = options.add_command(
        commands, "prepare", "Decode and cache the images a run will read, then stop.",
        ("melanoma-bench prepare --config paper --data-dir ~/data/melanoma",))
    options.add_config(parser)
    options.add_data_dir(parser)
    options.add_limit(parser)
    parser.set_defaults(handler=main)


def main(args) -> int:
    cfg = options.config_from(args)
    options.check_data_dir(args, cfg)
    from melanoma.data.splits import prepare

    for cache in prepare(cfg, args.data_dir):
        print(f"{cache.path}\t{len(cache)} images\t{cache.image_size} px")
    return 0
