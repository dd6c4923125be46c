"""Several processes (hosts): starting ``jax.distributed``, barriers that wait for slow hosts, naming a lost peer.

One process drives all the devices of its machine; a run on N machines (or N processes on one machine) is N
copies of the same command that find each other through ``jax.distributed``. What this module adds to it:

- **CPU collectives**: on the CPU backend cross-process all-reduces go through gloo over TCP; the program selects
  it (``jax_cpu_collectives_implementation='gloo'``) before the backend starts, unless the user chose another.
- **Unequal hosts**: gloo waits at most 30 s for a peer inside a collective, and a host that compiles slower than
  the others (hosts are never equally fast) would make the first all-reduce fail. The loop therefore compiles its
  programs ahead of time and then meets the other processes at :func:`sync`, a barrier of the coordination
  service with a long timeout (``BARRIER_TIMEOUT_S``), before the first collective runs.
- **Dead peers**: a collective whose peer died waits forever (gloo notices nothing), so every process runs a
  :class:`Watchdog` thread that bumps a counter of its own in the coordination service's key-value store every
  second and watches the others' counters. When a peer's counter has not moved for ``HEARTBEAT_TIMEOUT_S``
  seconds, or the coordinator (process 0) cannot be reached, it prints
  ``[process i/n] lost process j of n: ...`` to stderr and ends this process with exit status 4 (the
  checkpoints written so far are complete: orbax commits a step by renaming it). A collective whose peer died
  may also *fail* at once (gloo: connection closed); the error then waits in the watchdog's ``__exit__`` until
  the heartbeats tell (at most ``HEARTBEAT_TIMEOUT_S`` + a few seconds) whether a peer is gone. Nothing on the
  failure path asks the coordination service who is alive (``get_live_nodes`` is itself a collective call: it
  waits for every live process, and a dead one is only known after the service's own heartbeat timeout).
  ``jax.distributed``'s own heartbeat (``HEARTBEAT_TIMEOUT_S + 30`` s) is the fallback: it aborts the process
  naming the dead task.

Environment (all optional): ``STYLEGAN_JAX_HEARTBEAT_TIMEOUT`` (seconds, default 30),
``STYLEGAN_JAX_INIT_TIMEOUT`` (seconds processes wait for each other at start, default 900),
``STYLEGAN_JAX_BARRIER_TIMEOUT`` (seconds, default 3600), ``STYLEGAN_JAX_NO_DISTRIBUTED=1`` (never initialize).
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from typing import Any

import jax


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def _timeout(name: str, default: int) -> int:
    value = _env_int(name)
    return default if value is None or value <= 0 else value


HEARTBEAT_TIMEOUT_S = _timeout("STYLEGAN_JAX_HEARTBEAT_TIMEOUT", 30)
LOST_PEER_EXIT_CODE = 4
INIT_TIMEOUT_S = _timeout("STYLEGAN_JAX_INIT_TIMEOUT", 900)
BARRIER_TIMEOUT_S = _timeout("STYLEGAN_JAX_BARRIER_TIMEOUT", 3600)
SHUTDOWN_TIMEOUT_S = 60  # the exit barrier: a process whose peers died must not wait the default 5 minutes


class PeerLost(RuntimeError):
    """Another process of a multi-process run died or became unreachable."""


def multi_host_env() -> str | None:
    """The multi-process launcher this process runs under, or None for a single-process run.

    Recognised: an explicit ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``), SLURM
    with more than one task, Open MPI with more than one rank, and multi-host Cloud TPU slices.
    ``STYLEGAN_JAX_NO_DISTRIBUTED=1`` disables the detection.
    """
    env = os.environ
    if env.get("STYLEGAN_JAX_NO_DISTRIBUTED"):
        return None
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return "JAX_COORDINATOR_ADDRESS"
    if "SLURM_JOB_ID" in env and (_env_int("SLURM_STEP_NUM_TASKS") or _env_int("SLURM_NTASKS") or 1) > 1:
        return "SLURM"
    if (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "Open MPI"
    if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "Cloud TPU"
    return None


def maybe_initialize_distributed() -> bool:
    """Call ``jax.distributed.initialize()`` when this process is one of several (see ``multi_host_env``).

    Must run before anything touches JAX devices. On a single machine (any number of local GPUs) nothing is
    needed and nothing happens: one process drives all local devices. Under SLURM / Open MPI / Cloud TPU JAX
    finds the coordinator, process count and id itself; elsewhere set ``JAX_COORDINATOR_ADDRESS=host:port``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every process. Returns True if it initialized.
    """
    launcher = multi_host_env()
    if launcher is None or jax.distributed.is_initialized():
        return False
    kwargs: dict[str, Any] = {}
    if launcher == "JAX_COORDINATOR_ADDRESS":
        num, pid = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
        if num is None or pid is None:
            raise ValueError("JAX_COORDINATOR_ADDRESS is set: set JAX_NUM_PROCESSES (the number of processes) and "
                             "JAX_PROCESS_ID (0 .. JAX_NUM_PROCESSES-1, different on every process) too")
        if not 0 <= pid < num:
            raise ValueError(f"JAX_PROCESS_ID={pid} must be in 0 .. JAX_NUM_PROCESSES-1 = {num - 1}")
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"], num_processes=num, process_id=pid)
    # Cross-process collectives of the CPU backend (gloo over TCP); ignored by GPU and TPU backends. Set before the
    # backend exists; a user's explicit choice (e.g. 'mpi') is kept.
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs, initialization_timeout=INIT_TIMEOUT_S,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S + 30,
                               shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S)
    return True


def _client() -> Any:
    from jax._src import distributed as _dist  # the only handle on the coordination-service client

    return _dist.global_state.client


_barrier_ids = itertools.count()


def sync(name: str, timeout_s: int | None = None) -> None:
    """Wait until every process arrives here (no-op with one process).

    A barrier of the coordination service, not a device collective: it compiles nothing and waits up to
    ``timeout_s`` (default ``BARRIER_TIMEOUT_S``), so a host that compiles or writes slower than the others does
    not make a collective time out. Every process must call the same ``sync`` calls in the same order.
    """
    if jax.process_count() == 1:
        return
    client = _client()
    if client is None:
        return
    timeout = BARRIER_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        client.wait_at_barrier(f"stylegan_jax/{next(_barrier_ids)}/{name}", int(timeout * 1000))
    except Exception as e:  # noqa: BLE001 - the runtime raises its own error types
        raise PeerLost(lost_peer_message(e, where=f"barrier {name!r}")) from e


_active_watchdog: Watchdog | None = None  # the running watchdog of this process (its heartbeat view)


def lost_peers() -> list[int] | None:
    """Process ids whose heartbeat the running :class:`Watchdog` has not seen move for ``HEARTBEAT_TIMEOUT_S``
    ([] = all beating; None = cannot tell: no watchdog running, or the coordinator is unreachable). Returns at
    once (no call to the coordination service)."""
    if jax.process_count() == 1:
        return []
    dog = _active_watchdog
    if dog is None or dog.coordinator_unreachable:
        return None
    return dog.silent_peers()


def lost_peer_message(error: BaseException, where: str = "a collective") -> str:
    """A one-line explanation of a failure of a multi-process run that names the dead process(es)."""
    me = jax.process_index()
    lost = lost_peers()
    if lost is None:
        unreachable = _active_watchdog is not None and _active_watchdog.coordinator_unreachable
        who = ("process 0 (the coordinator) is unreachable" if unreachable
               else "cannot tell which process is lost (no heartbeat watch running)")
    elif lost:
        who = "lost process " + ", ".join(str(i) for i in lost) + " of " + str(jax.process_count())
    else:
        who = "no process is reported dead yet (a peer may have closed its connection)"
    text = str(error).strip().splitlines()
    detail = text[0][:300] if text else type(error).__name__
    return f"process {me}: {who}; stopped in {where}: {type(error).__name__}: {detail}"


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` (raised by a step or a barrier) means another process died rather than a bug here."""
    if isinstance(error, PeerLost):
        return True
    if jax.process_count() == 1:
        return False
    if lost_peers():
        return True
    return _mentions_peer_failure(error)


def _mentions_peer_failure(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, PeerLost) or any(
        s in text for s in ("Gloo", "gloo", "Connection reset", "Connection closed", "DEADLINE_EXCEEDED",
                            "UNAVAILABLE", "heartbeat"))


class Watchdog:
    """Ends this process (exit status ``LOST_PEER_EXIT_CODE``) with a message naming the peer when another process
    of the run stops making progress for ``timeout_s`` seconds or the coordinator is gone. A no-op with one
    process. Use as a context manager around the run; leaving it marks this process as finished, so that peers
    still running do not take a normal exit for a crash. Left with an error that looks like a failed collective
    (a peer's connection closed), it first keeps watching for up to ``timeout_s`` + 5 s, so that a dead peer is
    named (and the process ends with ``LOST_PEER_EXIT_CODE``) rather than the error of its broken connection."""

    def __init__(self, timeout_s: float | None = None, interval_s: float = 1.0, on_lost: Any = None):
        self.timeout_s = HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s  # staleness that means dead
        self.interval_s = interval_s  # seconds between own beats / checks
        self.on_lost = on_lost  # called with the message before exiting (e.g. to name the last checkpoint)
        self._stop = None
        self._thread = None
        self._last_change: dict[int, float] = {}  # peer -> monotonic time its beat last moved
        self.coordinator_unreachable = False

    def __enter__(self) -> Watchdog:
        global _active_watchdog
        if jax.process_count() > 1 and _client() is not None:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="stylegan-jax-watchdog", daemon=True)
            self._thread.start()
            _active_watchdog = self
        return self

    def __exit__(self, exc_type: Any = None, exc: BaseException | None = None, tb: Any = None) -> None:
        global _active_watchdog
        if self._thread is None:
            return
        if exc is not None and _mentions_peer_failure(exc):
            # Most likely a peer died inside a collective: give the heartbeats time to tell (the thread then ends
            # the process naming it). The main thread sleeps here, so the watchdog thread runs.
            deadline = time.monotonic() + self.timeout_s + 5
            while time.monotonic() < deadline and self._thread.is_alive() and not self.silent_peers():
                time.sleep(min(self.interval_s, 0.5))
            if self.silent_peers() and self._thread.is_alive():
                time.sleep(3 * self.interval_s + 1)  # the thread reports it at its next check
        self._stop.set()
        self._thread.join(timeout=5)
        _active_watchdog = None
        try:
            _client().key_value_set(f"stylegan_jax/alive/{jax.process_index()}", "done", allow_overwrite=True)
        except Exception:  # noqa: BLE001 - the coordinator may be gone already
            pass

    def silent_peers(self) -> list[int]:
        """Peers whose beat has not moved for ``timeout_s`` seconds (as last seen by the watchdog thread)."""
        now = time.monotonic()
        return sorted(pid for pid, since in list(self._last_change.items()) if now - since > self.timeout_s)

    def _lost(self, message: str) -> None:
        line = f"{log_prefix()}{message}"
        if self.on_lost is not None:
            try:
                line += self.on_lost()
            except Exception:  # noqa: BLE001
                pass
        print(line, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(LOST_PEER_EXIT_CODE)  # skip the exit barrier: the peer will never arrive

    def _run(self) -> None:
        client, me, n = _client(), jax.process_index(), jax.process_count()
        seen: dict[int, tuple[str | None, float]] = {}
        beat = 0
        unreachable_since = None
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                beat += 1
                client.key_value_set(f"stylegan_jax/alive/{me}", str(beat), allow_overwrite=True)
                values = {int(k.rsplit("/", 1)[1]): v for k, v in client.key_value_dir_get("stylegan_jax/alive/")}
                unreachable_since = None
            except Exception as e:  # noqa: BLE001 - the coordination service (on process 0) is unreachable
                if me == 0:
                    continue
                unreachable_since = unreachable_since or now
                if now - unreachable_since > min(self.timeout_s, 10):
                    self.coordinator_unreachable = True
                    self._lost(f"lost process 0 of {n} (the coordinator): unreachable ({str(e).splitlines()[0]})")
                continue
            for pid in range(n):
                if pid == me:
                    continue
                value = values.get(pid)
                if value is None or value == "done":  # not started its watchdog yet (the barriers wait for it) / ended
                    self._last_change.pop(pid, None)
                    continue
                last_value, since = seen.get(pid, (None, now))
                if value != last_value:
                    seen[pid] = (value, now)
                    self._last_change[pid] = now
                elif now - since > self.timeout_s:
                    self._lost(f"lost process {pid} of {n}: no sign of life for {now - since:.0f} s "
                               f"(killed, crashed or its host is down); stopping")


def log_prefix() -> str:
    """``'[process i/n] '`` when there are several processes, else ``''``."""
    n = jax.process_count()
    return f"[process {jax.process_index()}/{n}] " if n > 1 else ""


__all__ = [
    "BARRIER_TIMEOUT_S",
    "HEARTBEAT_TIMEOUT_S",
    "LOST_PEER_EXIT_CODE",
    "PeerLost",
    "Watchdog",
    "is_peer_failure",
    "log_prefix",
    "lost_peer_message",
    "lost_peers",
    "maybe_initialize_distributed",
    "multi_host_env",
    "sync",
]
