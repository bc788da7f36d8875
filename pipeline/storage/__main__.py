"""``python -m pipeline.storage cat URL``: one object to stdout (for webdataset's ``pipe:`` URLs)."""
import shutil
import sys

from pipeline.storage import open_stream


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "cat":
        print("usage: python -m pipeline.storage cat URL   (writes the object to stdout)", file=sys.stderr)
        return 2
    with open_stream(argv[1]) as src:
        shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
