"""The processes of one node of the multi-node training job (tools/finetune/batch.py `train`): the
node's place from AWS Batch's multi-node parallel variables, the torch.distributed environment of
each local process, and one `python3 -m tools.finetune.train` per GPU.
"""

import signal
import socket
import subprocess
import sys
import time

from .spec import EXIT_INTERRUPTED, SpecError

# torch.distributed's rendezvous port on the main node (infra/lib/workflows/finetune.ts RENDEZVOUS_PORT)
MASTER_PORT = 29500


def node_layout(env, gpus):
    """(node index, node count, processes per node, main address) from AWS Batch's multi-node
    parallel variables; a single-node job (or a local run) is node 0 of 1."""
    nodes = int(env.get("AWS_BATCH_JOB_NUM_NODES", "1"))
    index = int(env.get("AWS_BATCH_JOB_NODE_INDEX", "0"))
    main = int(env.get("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"))
    if not 0 <= index < nodes:
        raise SpecError(f"AWS_BATCH_JOB_NODE_INDEX {index} is not in 0 … {nodes - 1}")
    if index == main:
        addr = env.get("CIL_MAIN_ADDR") or _own_address()
    else:
        addr = env.get("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")
        if not addr:
            raise SpecError("a child node of a multi-node job without AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")
    # The main node is rank block 0 whatever its Batch index, so the global ranks are contiguous.
    rank_block = 0 if index == main else (index + 1 if index < main else index)
    return {"node": rank_block, "nodes": nodes, "procs": max(1, gpus), "addr": addr}


def _own_address():
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def process_envs(layout, base_env, port=MASTER_PORT):
    """The torch.distributed environment of each local process (what torchrun would set)."""
    world = layout["nodes"] * layout["procs"]
    envs = []
    for local in range(layout["procs"]):
        e = dict(base_env)
        e.update({
            "RANK": str(layout["node"] * layout["procs"] + local), "LOCAL_RANK": str(local), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(layout["procs"]), "GROUP_RANK": str(layout["node"]),
            "MASTER_ADDR": layout["addr"], "MASTER_PORT": str(port),
        })
        if world == 1:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
                e.pop(k)
        envs.append(e)
    return envs


def spawn_workers(argv, envs, poll=0.2, stdout=None):
    """Starts one `python3 -m tools.finetune.train` per environment and waits. The first process
    to fail stops the others (a DDP job cannot continue short of a rank); SIGTERM is forwarded, so
    every rank saves its part of the checkpoint. Returns the exit code (143 when interrupted).

    Written instead of calling torchrun: Batch restarts a failed job as a whole, so torchrun's
    elastic agent adds nothing, and the launcher stays the same on every torch build."""
    procs = [subprocess.Popen([sys.executable, "-m", "tools.finetune.train", *argv], env=e, stdout=stdout) for e in envs]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                time.sleep(5 * poll)
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        p.kill()
                return EXIT_INTERRUPTED if all(c in (None, 0, EXIT_INTERRUPTED) for c in codes) else failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll)
    finally:
        signal.signal(signal.SIGTERM, previous)
