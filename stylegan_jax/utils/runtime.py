"""Process-level performance settings.

XLA on CPU allocates its large buffers afresh in every call, and the kernel zero-fills each new
4 KiB page on first touch; for StyleGAN3 at 256px that is several GB of page faults per forward
pass. Asking glibc to back large allocations with transparent huge pages
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``) cuts that cost by about half. glibc reads tunables only
at process start, so command-line entry points re-execute themselves once with the setting.
"""

from __future__ import annotations

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
