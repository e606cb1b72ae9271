"""Subprocess entry for the resume-after-SIGKILL and torchrun tests.

``python -m tests.training.worker OUT CORPUS [--kill-after N] [--resume]`` trains the tiny
config on the tiny llama; with ``--kill-after`` the process SIGKILLs itself right after step N.
Every rank writes its final parameters to ``OUT/rank{r}.safetensors``.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from safetensors.torch import save_file

from tests.training.helpers import tiny_config, tiny_source
from tracewire.corpus import TokenCorpus
from tracewire.training import train_transcoders
from tracewire.training.distributed import setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kind", default="plt")
    args = parser.parse_args()
    rank, _ = setup()
    config = tiny_config(kind=args.kind, activation="jumprelu", tokens=8 * 15 * 10, checkpoint_every=2)

    def on_step(step: int) -> None:
        if args.kill_after is not None and step == args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    result = train_transcoders(config, tiny_source(TokenCorpus(args.corpus), config), args.out,
                               resume=args.resume, progress=False, on_step=on_step)  # fmt: skip
    state = {k: v.contiguous() for k, v in result.module.state_dict().items()}
    save_file(state, str(args.out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
