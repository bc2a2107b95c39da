"""A stand-in for the AWS CLI over a local folder ($FAKE_S3_ROOT/<bucket>/<key>), for the tests.

Implements what tools/finetune uses: `s3 cp` (file ↔ object, object → object, --recursive with
--exclude), `s3 sync` (folder/prefix ↔ folder/prefix, --exclude, --delete), `s3 rm` (--recursive),
`s3api head-object`. Every call is appended to $FAKE_S3_ROOT/calls.log (one JSON list per line).
Missing sources fail as the real CLI does: exit 1 with "(404)" on stderr.
"""

import fnmatch
import json
import os
import shutil
import sys

ROOT = os.environ["FAKE_S3_ROOT"]


def path_of(uri):
    assert uri.startswith("s3://"), uri
    return os.path.join(ROOT, uri[len("s3://"):])


def not_found(what):
    print(f"An error occurred (404) when calling the HeadObject operation: Not Found ({what})", file=sys.stderr)
    sys.exit(1)


def files_under(folder):
    for base, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(base, n)
            yield os.path.relpath(full, folder).replace(os.sep, "/"), full


def copy(src, dst):
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    shutil.copyfile(src, dst)


def main(argv):
    with open(os.path.join(ROOT, "calls.log"), "a", encoding="utf-8") as f:
        f.write(json.dumps(argv) + "\n")
    flags = {a for a in argv if a in ("--only-show-errors", "--recursive", "--delete")}
    excludes = [argv[i + 1] for i, a in enumerate(argv) if a == "--exclude"]
    skip = {i + 1 for i, a in enumerate(argv) if a in ("--exclude", "--bucket", "--key")}
    pos = [a for i, a in enumerate(argv) if not a.startswith("--") and i not in skip]
    if pos[:2] == ["s3api", "head-object"]:
        b, k = argv[argv.index("--bucket") + 1], argv[argv.index("--key") + 1]
        p = os.path.join(ROOT, b, k)
        if not os.path.isfile(p):
            not_found(f"s3://{b}/{k}")
        print(json.dumps({"ContentLength": os.path.getsize(p)}))
        return
    cmd, args = pos[1], pos[2:]
    excluded = lambda rel: any(fnmatch.fnmatch(rel, e) for e in excludes)  # noqa: E731
    if cmd == "rm":
        p = path_of(args[0])
        if "--recursive" in flags:
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.isfile(p):
            os.remove(p)
        return
    src, dst = args
    s = path_of(src) if src.startswith("s3://") else src
    d = path_of(dst) if dst.startswith("s3://") else dst
    if cmd == "cp" and "--recursive" not in flags:
        if not os.path.isfile(s):
            not_found(src)
        copy(s, d)
        return
    if not os.path.isdir(s):
        if cmd == "sync":
            os.makedirs(d, exist_ok=True)
            return
        not_found(src)
    kept = set()
    for rel, full in files_under(s):
        if excluded(rel):
            continue
        kept.add(rel)
        copy(full, os.path.join(d, rel))
    if cmd == "sync" and "--delete" in flags and os.path.isdir(d):
        for rel, full in list(files_under(d)):
            if rel not in kept and not excluded(rel):
                os.remove(full)


if __name__ == "__main__":
    main(sys.argv[1:])
