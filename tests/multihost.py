"""Start one command as N cooperating JAX processes on this machine (the plain environment-variable form of a
multi-host launch, over 127.0.0.1), e.g.::

    python tests/multihost.py -n 2 --devices 2 -- python -m stylegan_jax.cli train --config ... --workdir ...

Each process gets ``JAX_COORDINATOR_ADDRESS=127.0.0.1:<free port>``, ``JAX_NUM_PROCESSES=n``, ``JAX_PROCESS_ID=i``,
``JAX_PLATFORMS=cpu`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=<devices>``; its stdout and stderr
go to ``<logdir>/process<i>.{out,err}`` (or are captured). Used by tests/test_multihost.py and
benchmarks/multihost.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict, n: int, i: int, port: int, devices: int) -> dict:
    env = dict(base)
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i),
               JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def start(cmd: list[str], n: int, devices: int, logdir: Path, env: dict | None = None,
          cwd: str | Path | None = None) -> list[subprocess.Popen]:
    """Start ``n`` copies of ``cmd``; process i writes ``logdir/process{i}.out`` / ``.err``."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs = []
    for i in range(n):
        out = open(logdir / f"process{i}.out", "w")
        err = open(logdir / f"process{i}.err", "w")
        procs.append(subprocess.Popen(cmd, env=process_env(env or os.environ, n, i, port, devices), stdout=out,
                                      stderr=err, cwd=cwd))
        out.close()
        err.close()
    return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes; every process still running after ``timeout`` seconds is killed (and reported as None)."""
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(None)
    return codes


def run(cmd: list[str], n: int, devices: int, logdir: Path, timeout: float, env: dict | None = None,
        cwd: str | Path | None = None) -> list[tuple[int | None, str, str]]:
    """Run ``n`` copies to the end: ``[(exit code, stdout, stderr)]`` per process."""
    codes = wait(start(cmd, n, devices, logdir, env, cwd), timeout)
    return [(c, (Path(logdir) / f"process{i}.out").read_text(), (Path(logdir) / f"process{i}.err").read_text())
            for i, c in enumerate(codes)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2, help="number of processes")
    ap.add_argument("--devices", type=int, default=2, help="CPU devices per process")
    ap.add_argument("--logdir", default="multihost_logs", help="where process<i>.out / .err go")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command ...")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given")
    results = run(cmd, args.n, args.devices, Path(args.logdir), args.timeout)
    for i, (code, _, _) in enumerate(results):
        print(f"process {i}: exit {code}")
    return 0 if all(c == 0 for c, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
