"""Where a fine-tuning run keeps its checkpoints: a local folder, or an S3 prefix.

Layout (the same in both):
    <out>/checkpoints/step-000002000.pt   resumable state (model, optimizer, EMA, RNG states, step)
    <out>/latest.json                     {"step": 2000, "file": "checkpoints/step-000002000.pt"}, written last
    <out>/export/model.ckpt | unet.ckpt   the fine-tuned weights in the layout tools/export loads
    <out>/cil-finetune.json               what was trained, how (TimeNoise parameters), where the export is

S3 goes through the AWS CLI (`aws s3 cp`), not boto3 (which is not among this tool's dependencies):
the file is written to a local staging folder, uploaded, and only then is latest.json replaced, so
a run killed mid-upload resumes from the previous checkpoint. Set CIL_AWS_CLI to use another `aws`
executable. Without the CLI, give --out a local folder and sync it yourself (docs/finetuning.md).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import torch

LATEST = "latest.json"
CHECKPOINTS = "checkpoints"
EXPORT = "export"
SUMMARY = "cil-finetune.json"
_STEP_FILE = re.compile(r"^step-(\d{9})\.pt$")


class StorageError(RuntimeError):
    """A checkpoint could not be read or written; the message names the location and why."""


class MissingCliError(StorageError):
    """An s3:// location without the AWS CLI: a configuration problem, not a transient one."""


def aws_cli():
    """The AWS CLI executable (CIL_AWS_CLI, else `aws` on PATH) or None."""
    explicit = os.environ.get("CIL_AWS_CLI")
    if explicit:
        return explicit
    return shutil.which("aws")


def run_aws(args, what, capture=False, check=True):
    cli = aws_cli()
    if cli is None:
        raise MissingCliError(f"{what}: the AWS CLI is not installed (needed for s3:// locations); install it, or use a local --out folder and sync it to S3 yourself")
    r = subprocess.run([cli, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise StorageError(f"{what}: aws {' '.join(args[:2])} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def is_s3(location):
    return location.startswith("s3://")


def join(location, *parts):
    base = location if location.endswith("/") else location + "/"
    return base + "/".join(parts)


def read_checkpoint(path, info):
    state = torch.load(path, map_location="cpu")
    if not isinstance(state, dict) or state.get("step") != info["step"]:
        raise StorageError(f"{path}: holds step {state.get('step') if isinstance(state, dict) else '?'}, latest.json says {info['step']}")
    return state


class CheckpointStore:
    """Checkpoints of one run under `out` (folder or s3:// prefix). `work_dir` stages S3 files."""

    def __init__(self, out, work_dir=None, keep=2):
        if not out:
            raise StorageError("--out: a folder or s3:// prefix is required")
        if is_s3(out) and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/", out if out.endswith("/") else out + "/"):
            raise StorageError(f"--out {out}: not an s3://bucket/prefix URI")
        self.out = out
        self.keep = max(1, int(keep))
        # Staging files: in `work_dir` when given (shared by the processes of a node), else in a
        # folder of our own (inside a local --out; a fresh temporary one for S3), created on first
        # use and removed by close(), so runs and tests leave nothing behind in the temp folder.
        self._given_work_dir = work_dir
        self._own_work_dir = None
        if not is_s3(out):
            os.makedirs(os.path.join(out, CHECKPOINTS), exist_ok=True)

    @property
    def work_dir(self):
        if self._given_work_dir:
            os.makedirs(self._given_work_dir, exist_ok=True)
            return self._given_work_dir
        if self._own_work_dir is None:
            if is_s3(self.out):
                self._own_work_dir = tempfile.mkdtemp(prefix="cil-finetune-")
            else:
                self._own_work_dir = os.path.join(self.out, ".staging")
                os.makedirs(self._own_work_dir, exist_ok=True)
        return self._own_work_dir

    def close(self):
        """Removes the staging folder this store created, and a given `work_dir` if it is empty
        (other processes of the node may still be using a non-empty one)."""
        if self._own_work_dir is not None:
            shutil.rmtree(self._own_work_dir, ignore_errors=True)
            self._own_work_dir = None
        if self._given_work_dir:
            try:
                os.rmdir(self._given_work_dir)
            except OSError:
                pass

    # ------------------------------------------------------------------ low level

    def _local(self, rel):
        return os.path.join(self.out, *rel.split("/"))

    def _put(self, local_file, rel):
        if is_s3(self.out):
            run_aws(["s3", "cp", "--only-show-errors", local_file, join(self.out, rel)], f"uploading {rel} to {self.out}")
        else:
            dest = self._local(rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.abspath(local_file) != os.path.abspath(dest):
                tmp = dest + ".tmp"
                shutil.copyfile(local_file, tmp)
                os.replace(tmp, dest)

    def _get(self, rel, local_file):
        """Copies `rel` to local_file; False when it does not exist."""
        if is_s3(self.out):
            r = run_aws(["s3", "cp", "--only-show-errors", join(self.out, rel), local_file], f"reading {rel}", check=False)
            if r.returncode != 0:
                if re.search(r"\(404\)|Not Found|does not exist|NoSuchKey", r.stderr or ""):
                    return False
                raise StorageError(f"reading {join(self.out, rel)}: aws s3 cp exited {r.returncode}: {(r.stderr or '').strip()[-2000:]}")
            return True
        src = self._local(rel)
        if not os.path.isfile(src):
            return False
        if os.path.abspath(src) != os.path.abspath(local_file):
            shutil.copyfile(src, local_file)
        return True

    def _delete(self, rel):
        if is_s3(self.out):
            run_aws(["s3", "rm", "--only-show-errors", join(self.out, rel)], f"removing old checkpoint {rel}", check=False)
        else:
            try:
                os.remove(self._local(rel))
            except FileNotFoundError:
                pass

    def _write_json(self, rel, obj):
        # Per-process names: several ranks of one node may share work_dir.
        path = os.path.join(self.work_dir, f"{rel.replace('/', '_')}.{os.getpid()}.tmp")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        self._put(path, rel)
        os.remove(path)

    def read_json(self, rel):
        path = os.path.join(self.work_dir, f"{rel.replace('/', '_')}.{os.getpid()}.read")
        if not self._get(rel, path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except ValueError as e:
            raise StorageError(f"{join(self.out, rel)}: not JSON ({e})") from e
        finally:
            os.remove(path)

    # ------------------------------------------------------------------ checkpoints

    def latest(self):
        """latest.json as a dict, or None when the run has no checkpoint yet."""
        info = self.read_json(LATEST)
        if info is None:
            return None
        if not isinstance(info, dict) or not isinstance(info.get("step"), int) or not isinstance(info.get("file"), str):
            raise StorageError(f"{join(self.out, LATEST)}: expected {{\"step\": int, \"file\": str}}, got {info!r}")
        if not hasattr(self, "_saved"):
            # A resumed run prunes the checkpoint it resumed from once `keep` newer ones exist.
            self._saved = [info["step"]]
        return info

    def local_copy(self, info, fetch=True):
        """A local path of the checkpoint latest.json names: the file itself for a folder; for S3
        a copy in work_dir, downloaded only when `fetch` (one process per node downloads, the
        others wait and read the same file). Returns (path, is_copy)."""
        if not is_s3(self.out):
            path = self._local(info["file"])
            if not os.path.isfile(path):
                raise StorageError(f"{join(self.out, LATEST)} names {info['file']}, which is missing")
            return path, False
        path = os.path.join(self.work_dir, f"resume-step-{info['step']:09d}.pt")
        if fetch and not self._get(info["file"], path):
            raise StorageError(f"{join(self.out, LATEST)} names {info['file']}, which is missing")
        return path, True

    def load_latest(self):
        """(step, state) of the newest checkpoint, or None (single process)."""
        info = self.latest()
        if info is None:
            return None
        path, is_copy = self.local_copy(info)
        try:
            return info["step"], read_checkpoint(path, info)
        finally:
            if is_copy:
                os.remove(path)

    def save(self, step, state):
        """Writes the checkpoint, then latest.json (an interrupted save leaves the previous one
        current), then removes checkpoints beyond the newest `keep`."""
        name = f"step-{step:09d}.pt"
        rel = f"{CHECKPOINTS}/{name}"
        if is_s3(self.out):
            local = os.path.join(self.work_dir, name)
        else:
            local = self._local(rel) + ".partial"
        torch.save(state, local)
        if is_s3(self.out):
            self._put(local, rel)
            os.remove(local)
        else:
            os.replace(local, self._local(rel))
        self._write_json(LATEST, {"step": step, "file": rel})
        self._prune(step)
        return rel

    def _prune(self, newest):
        if is_s3(self.out):
            # Only the checkpoints this process saved are known without a listing (ListBucket is
            # scoped; not needed): remove the one `keep` saves back, if any was recorded.
            saved = getattr(self, "_saved", [])
            saved.append(newest)
            self._saved = saved
            while len(saved) > self.keep:
                self._delete(f"{CHECKPOINTS}/step-{saved.pop(0):09d}.pt")
            return
        steps = sorted(int(m.group(1)) for m in (_STEP_FILE.match(f) for f in os.listdir(self._local(CHECKPOINTS))) if m)
        for s in steps[: max(0, len(steps) - self.keep)]:
            if s != newest:
                self._delete(f"{CHECKPOINTS}/step-{s:09d}.pt")

    def save_export(self, name, obj, summary):
        """The fine-tuned weights in the exporter's layout, then the run summary (last)."""
        rel = f"{EXPORT}/{name}"
        local = os.path.join(self.work_dir, name)
        torch.save(obj, local)
        self._put(local, rel)
        os.remove(local)
        self._write_json(SUMMARY, summary)
        return join(self.out, rel) if is_s3(self.out) else self._local(rel)
