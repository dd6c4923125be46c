"""Process-level performance settings: huge pages for XLA's buffers, and the persistent compilation cache.

XLA on CPU allocates its large buffers afresh in every call, and the kernel zero-fills each new
4 KiB page on first touch; for StyleGAN3 at 256px that is several GB of page faults per forward
pass. Asking glibc to back large allocations with transparent huge pages
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) cuts that cost by about half. glibc reads tunables only
at process start, so command-line entry points re-execute themselves once with the setting.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys

TUNABLES = "glibc.malloc.hugetlb=1"
_OPT_OUT = "STYLEGAN_JAX_NO_REEXEC"


def maybe_reexec_with_hugepages() -> None:
    """Re-exec the current program with transparent huge pages for malloc, once, on Linux/glibc.

    No-op when already set, when ``STYLEGAN_JAX_NO_REEXEC=1``, off Linux, or when the C library
    is not glibc >= 2.35 (older glibc ignores the tunable anyway).
    """
    if os.environ.get(_OPT_OUT) or "hugetlb" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    if sys.platform != "linux":
        return
    libc, version = platform.libc_ver()
    try:
        if libc != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
            return
    except ValueError:
        return
    if not sys.argv or not os.path.exists(sys.argv[0]):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), TUNABLES) if t)
    env[_OPT_OUT] = "1"  # never loop
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


COMPILE_CACHE_ENV = "STYLEGAN_JAX_COMPILE_CACHE"
# JAX evicts the least recently used entries beyond this many bytes (the quickstart's programs take ~2 MB).
COMPILE_CACHE_MAX_BYTES = 4 << 30


def default_compile_cache_dir() -> str:
    """``$XDG_CACHE_HOME/stylegan-jax/xla`` (``~/.cache/stylegan-jax/xla`` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "stylegan-jax", "xla")


def enable_compile_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for this process (and the processes it starts) by environment,
    before JAX is imported; returns the directory, or None when it stays off.

    The command line calls this so that a second ``train`` of the same config (a resumed run), ``generate`` or
    ``project`` loads the compiled programs instead of compiling them again (tens of seconds for a train step on a
    CPU). The user's choice wins: ``JAX_COMPILATION_CACHE_DIR`` set means JAX already uses that directory;
    ``STYLEGAN_JAX_COMPILE_CACHE=off`` (or ``0``) disables it; any other value of ``STYLEGAN_JAX_COMPILE_CACHE`` is the
    directory to use instead of :func:`default_compile_cache_dir`. The cache is bounded (least recently used entries
    evicted beyond :data:`COMPILE_CACHE_MAX_BYTES`, unless ``JAX_COMPILATION_CACHE_MAX_SIZE`` says otherwise). An
    entry from another machine type is rejected by XLA's loader and compiled afresh; a directory that cannot be
    created, or a missing ``filelock`` package (which JAX's bounded cache needs), leaves the cache off.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    choice = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    if choice.lower() in ("off", "0", "false", "no", "none"):
        return None
    path = os.path.abspath(os.path.expanduser(choice)) if choice else default_compile_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    if importlib.util.find_spec("filelock") is None:  # JAX's size-bounded cache locks with it (a dependency)
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILE_CACHE_MAX_BYTES))
    return path
