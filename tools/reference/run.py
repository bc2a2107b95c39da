"""One reference-parity case, Python side: build the tiny real-class model, run the authors'
reference pipeline on our noise, then export the checkpoint with our exporter (float32, float16,
and float32 with external data for the >2 GB path).

    python -m tools.reference.run --case dynamicrafter --out /tmp/ref/dynamicrafter --repo $CIL_REFERENCE_REPO

`--repo` (or $CIL_REFERENCE_REPO) is a checkout of the authors' repository (thu-ml/cond-image-leakage:
the folder holding examples/). The case `svd-base` needs no checkout: it runs stock diffusers.
diffusers is the pinned PyPI package unless $CIL_DIFFUSERS_SRC names a checkout of it.
What lands in --out is listed in docs/reference.md; the TypeScript side (scripts/reference.ts)
then runs `cil generate` on each bundle and compares.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# case → (module, prepare kwargs, needs the authors' checkout)
CASES = {
    "dynamicrafter": ("lvdm", {"family": "dynamicrafter"}, True),
    "videocrafter": ("lvdm", {"family": "videocrafter"}, True),
    "svd-cil": ("svd", {"variant": "cil"}, True),
    "svd-base": ("svd", {"variant": "base"}, False),
}

# bundle name → extra exporter flags. External data is forced on one float32 bundle per case:
# real checkpoints are over protobuf's 2 GB limit, tiny ones never are.
BUNDLES = {
    "fp32": ["--fp32"],
    "fp16": ["--fp16"],
    "fp32-external": ["--fp32", "--external-data"],
}


class ReferenceSetupError(Exception):
    pass


def reference_repo(arg):
    repo = arg or os.environ.get("CIL_REFERENCE_REPO")
    if not repo:
        raise ReferenceSetupError(
            "no checkout of the authors' code: pass --repo or set CIL_REFERENCE_REPO to a checkout of "
            "thu-ml/cond-image-leakage (the folder holding examples/); see docs/reference.md"
        )
    if not os.path.isdir(os.path.join(repo, "examples")):
        raise ReferenceSetupError(f"CIL_REFERENCE_REPO={repo}: no examples/ folder; expected a checkout of thu-ml/cond-image-leakage")
    return os.path.abspath(repo)


def diffusers_src():
    """$CIL_DIFFUSERS_SRC: a diffusers checkout to use instead of the installed package (its src/
    folder, or the folder holding diffusers/), or None."""
    src = os.environ.get("CIL_DIFFUSERS_SRC")
    if not src:
        return None
    for cand in (os.path.join(src, "src"), src):
        if os.path.isfile(os.path.join(cand, "diffusers", "__init__.py")):
            return os.path.abspath(cand)
    raise ReferenceSetupError(f"CIL_DIFFUSERS_SRC={src}: no diffusers/__init__.py in it or in its src/ folder")


def _pythonpath():
    paths = [p for p in (diffusers_src(), _repo_root()) if p]
    return os.pathsep.join(paths)


def export(out, bundle, flags, log):
    with open(os.path.join(out, "export.json"), encoding="utf-8") as f:
        spec = json.load(f)
    cmd = [sys.executable, "-m", spec["module"], *spec["args"], *flags, "--out", os.path.join(out, f"bundle-{bundle}"), "--device", "cpu"]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    if r.returncode != 0:
        raise ReferenceSetupError(f"export of bundle-{bundle} failed ({' '.join(cmd)}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    log(f"exported bundle-{bundle} in {time.time() - t0:.1f} s")


def _repo_root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_case(case, out, repo=None, bundles=tuple(BUNDLES), log=print):
    if case not in CASES:
        raise ReferenceSetupError(f"--case {case!r}: one of {', '.join(CASES)}")
    module, kwargs, needs_repo = CASES[case]
    src = diffusers_src()
    if src and src not in sys.path:
        sys.path.insert(0, src)  # before anything imports diffusers
    repo = reference_repo(repo) if needs_repo else (repo or os.environ.get("CIL_REFERENCE_REPO"))
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    mod = __import__(f"tools.reference.{module}", fromlist=["prepare"])
    mod.prepare(out, repo, log=log, **kwargs)
    t_ref = time.time() - t0
    for b in bundles:
        export(out, b, BUNDLES[b], log)
    info = {"case": case, "bundles": [f"bundle-{b}" for b in bundles], "referenceS": round(t_ref, 2), "totalS": round(time.time() - t0, 2)}
    with open(os.path.join(out, "case.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.reference.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--case", required=True, choices=sorted(CASES))
    p.add_argument("--out", required=True)
    p.add_argument("--repo", help="checkout of thu-ml/cond-image-leakage (default $CIL_REFERENCE_REPO)")
    p.add_argument("--bundles", default=",".join(BUNDLES), help=f"comma-separated subset of {', '.join(BUNDLES)}")
    args = p.parse_args(argv)
    bundles = [b for b in args.bundles.split(",") if b]
    bad = [b for b in bundles if b not in BUNDLES]
    if bad:
        p.error(f"--bundles {bad}: one of {', '.join(BUNDLES)}")
    try:
        info = run_case(args.case, args.out, args.repo, bundles)
    except ReferenceSetupError as e:
        print(f"reference run failed: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
