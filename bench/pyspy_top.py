"""Summarise a `py-spy record --format raw` file: where the samples went.

python -m bench.pyspy_top /tmp/prof/concurrent-1234.txt [--match playground/]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="", help="inclusive counts only for frames containing this")
    args = p.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(args.path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                if args.match in frame:
                    inclusive[frame] += n
    print(f"{total} samples")
    print("-- self --")
    for frame, n in own.most_common(args.top):
        print(f"{n / total:6.1%}  {frame}")
    print("-- inclusive --")
    for frame, n in inclusive.most_common(args.top):
        print(f"{n / total:6.1%}  {frame}")


if __name__ == "__main__":
    main()
