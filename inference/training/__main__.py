"""``python -m inference.training [--quick] [--out DIR] ...``"""

from __future__ import annotations

import argparse

from inference.training import cli, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inference.training", description=__doc__)
    cli.add_arguments(parser)
    options = vars(parser.parse_args(argv))
    if options["card_only"]:
        print(train.rerender_card(out=cli.out_from(options), scratch=options["scratch"]))
        return
    train.run(cli.config_from(options), out=cli.out_from(options), scratch=options["scratch"])


if __name__ == "__main__":
    main()
