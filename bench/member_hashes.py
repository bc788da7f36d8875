"""``python bench/member_hashes.py OUT [OUT ...]``: one line per tar member (tar, member, sha256
prefix) of every tar under the given output folders. Two runs' outputs are byte-identical when
the diff of these lines is empty (how refactors are checked, see docs/architecture.md)."""
import glob
import hashlib
import os
import sys
import tarfile


def main(outs: list[str]) -> int:
    for out in outs:
        for tar in sorted(glob.glob(os.path.join(out, "**", "*.tar"), recursive=True)):
            with tarfile.open(tar) as tf:
                for m in tf.getmembers():
                    if m.isfile():
                        digest = hashlib.sha256(tf.extractfile(m).read()).hexdigest()[:16]
                        print(os.path.relpath(tar, out), m.name, digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
