"""Read official NVIDIA StyleGAN2/3 network pickles safely, without torch and without running anything from the file.

Format
------
An official network pickle (``network-snapshot-*.pkl``) is a plain pickle of a dict with ``G``, ``D``,
``G_ema``, ``augment_pipe`` and ``training_set_kwargs``. Each network is a ``torch_utils.persistence``
persistent object: it is pickled as a call to ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta`` is a dict with ``type`` (``'class'``), ``version`` (6), ``module_src`` (the full source of
the Python module that defined the class), ``class_name`` (the bare class name, e.g. ``'Generator'``) and
``state`` (the module's ``__dict__``: ``_parameters`` / ``_buffers`` / ``_modules`` dicts holding
tensors and submodules, plain attributes, and the constructor arguments as ``_init_args`` /
``_init_kwargs``). Tensors are pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)`` (wrapped in ``_rebuild_parameter`` for parameters); each storage is pickled as
``torch.storage._load_from_bytes(b)`` where ``b`` is a complete nested ``torch.save`` byte string (legacy
non-zip format in practice; the zip format is read too), whose own pickle refers to the raw data through
persistent ids ``('storage', torch.FloatStorage, key, location, numel, view)``. Plain attributes may be
numpy scalars and arrays (``numpy.core.multiarray.scalar`` / ``_reconstruct``).

Security model
--------------
Unpickling calls whatever the file names, so loading an untrusted pickle with the default unpickler
(or with the official code, which ``exec``-s ``module_src``) runs arbitrary code. Here every global the
file asks for goes through :meth:`_RestrictedUnpickler.find_class`, which admits only the explicit
allowlist in ``_ALLOWED_GLOBALS`` and returns *our own* stand-in for each entry (passive records,
numpy-array builders, dtype tables), never the real torch / persistence / numpy callable. Anything else
(``os.system``, ``builtins.eval``, ``subprocess.Popen``, an unknown module, ...) raises
:class:`UnsafePickleError` naming the module and name before it can be called. Persistent ids are only
accepted inside nested ``torch.save`` payloads and only in the ``('storage', ...)`` form. ``module_src`` is
returned as text and never executed. Nested storage payloads are parsed with the same restricted
unpickler. All other failures (truncation, corruption, a pickle that is not in the official layout)
raise :class:`OfficialPickleError` with the file name and what is wrong.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "NetworkRecord",
    "OfficialPickle",
    "OfficialPickleError",
    "UnsafePickleError",
    "load_official_pickle",
    "load_official_pickle_bytes",
]


class OfficialPickleError(ValueError):
    """The file is not a readable official network pickle (truncated, corrupt, or another layout)."""


class UnsafePickleError(OfficialPickleError):
    """The pickle asks for a global (or persistent id) outside the allowlist; nothing from it was run."""

    def __init__(self, source: str, module: str, name: str, detail: str = ""):
        self.module = module
        self.name = name
        what = f"persistent id {name}" if module == "<persistent_load>" else f"global {module}.{name}"
        msg = f"{source}: refusing to load {what}: not in the allowlist of the official network format"
        super().__init__(msg + (f" ({detail})" if detail else ""))


# --------------------------------------------------------------------------------------------------------------
# Passive records that stand in for torch / persistence / numpy objects during unpickling.


class _Record:
    """Base for stand-ins: pickle's BUILD must not be able to set arbitrary attributes on them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise OfficialPickleError(f"unexpected object state for {type(self).__name__}")


class _PersistentRecord(_Record):
    """What ``_reconstruct_persistent_obj(meta)`` would have rebuilt, kept as data."""

    __slots__ = ("meta",)

    def __init__(self, meta: dict):
        self.meta = meta


class _PlainModuleRecord:
    """A plain ``torch.nn`` module (not persistent): pickled via NEWOBJ + BUILD(__dict__)."""

    torch_class = "torch.nn.Module"  # overridden per allowed class

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise OfficialPickleError(f"state of {self.torch_class} is not a dict")
        self.__dict__["_state"] = state


class _EasyDictRecord(dict):
    """``dnnlib.util.EasyDict`` (a dict subclass): pickled via NEWOBJ + SETITEMS; kept as a dict."""

    def __setstate__(self, state: Any) -> None:
        # EasyDict keeps everything in the dict itself; its (empty) __dict__ state carries nothing we need.
        if state is not None and not isinstance(state, dict):
            raise OfficialPickleError("unexpected state for dnnlib.util.EasyDict")


class _Marker(_Record):
    """A named, inert token: stands in for a type that the format only passes around as an argument."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


class _Global(_Record):
    """Wraps each allowed function so that pickle's BUILD opcode cannot set attributes (``__defaults__``,
    ``__dict__``, ...) on our module-level functions: BUILD on a ``_Record`` raises instead."""

    __slots__ = ("fn", "qualname")

    def __init__(self, fn: Callable[..., Any], qualname: str):
        self.fn, self.qualname = fn, qualname

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualname}>"


_NDARRAY = _Marker("numpy.ndarray")
_TENSOR = _Marker("torch._tensor.Tensor")


class _DTypeRecord(_Record):
    """``numpy.dtype(spec, align, copy)`` followed by BUILD(state); only plain numeric dtypes are admitted."""

    __slots__ = ("spec", "byteorder")

    _SPEC = re.compile(r"^(b1|\?|[iu][1248]|f[248]|c(8|16))$")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True):
        # Object, structured and void dtypes would let array state carry arbitrary objects: refuse them.
        if not isinstance(spec, str) or not self._SPEC.match(spec):
            raise OfficialPickleError(f"unsupported numpy dtype {spec!r} (only plain numeric dtypes are read)")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 8 or state[1] not in ("<", ">", "|", "="):
            raise OfficialPickleError("unexpected numpy dtype state")
        if state[2] is not None or state[3] is not None or state[4] is not None:
            raise OfficialPickleError("structured numpy dtypes are not supported")
        self.byteorder = state[1]

    @property
    def dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt if self.byteorder in ("|", "=") else dt.newbyteorder(self.byteorder)


class _NdarrayRecord(_Record):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` followed by BUILD(state)."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise OfficialPickleError("unexpected numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _DTypeRecord):
            raise OfficialPickleError("numpy array state without a plain dtype")
        self.array = _array_from_bytes(raw, dtype.dtype, shape, "F" if fortran else "C")


class _StorageRecord(_Record):
    """One torch storage: a flat numpy array of its dtype, filled once its bytes have been read."""

    __slots__ = ("dtype", "numel", "bfloat16", "_data", "_base", "_offset")

    def __init__(self, dtype: np.dtype, numel: int, bfloat16: bool = False, base: _StorageRecord | None = None,
                 offset: int = 0):
        self.dtype = dtype
        self.numel = numel
        self.bfloat16 = bfloat16
        self._data: np.ndarray | None = None
        self._base = base
        self._offset = offset

    def set_data(self, data: np.ndarray) -> None:
        self._data = data

    @property
    def data(self) -> np.ndarray:
        if self._base is not None:  # a legacy storage view: a slice of its root storage
            base = self._base.data
            if self._offset + self.numel > base.size:
                raise OfficialPickleError("storage view runs past the end of its base storage")
            return base[self._offset:self._offset + self.numel]
        if self._data is None:
            raise OfficialPickleError("storage data missing from the nested torch.save payload")
        return self._data


class _TensorRecord(_Record):
    """A tensor view (storage, offset, size, stride), materialised after all storage bytes have been read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _StorageRecord):
            raise OfficialPickleError(f"tensor built from {type(storage).__name__}, not from a storage")
        if not _is_int(offset) or not _is_int_tuple(size) or not _is_int_tuple(stride) or len(size) != len(stride):
            raise OfficialPickleError("tensor offset / size / stride are malformed")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise OfficialPickleError("negative tensor size, stride or offset")
        if math.prod(self.size) > 0:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
            if last >= data.size:
                raise OfficialPickleError(f"tensor of size {self.size} runs past its storage of {data.size} elements")
        else:
            return np.zeros(self.size, _out_dtype(self.storage))
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        out = np.array(view, order="C")  # an owned, contiguous copy: bitwise the stored values
        if self.storage.bfloat16:  # bfloat16 has no numpy dtype; it widens to float32 exactly
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _out_dtype(storage: _StorageRecord) -> np.dtype:
    return np.dtype(np.float32) if storage.bfloat16 else storage.dtype


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, tuple | list) and all(_is_int(v) for v in x)


def _array_from_bytes(raw: Any, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
    if not isinstance(raw, bytes | bytearray) or not _is_int_tuple(shape) or any(s < 0 for s in shape):
        raise OfficialPickleError("numpy array data is malformed")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise OfficialPickleError(f"numpy array data has {len(raw)} bytes, expected shape {tuple(shape)} of {dtype}")
    arr = np.frombuffer(bytes(raw), dtype=dtype).reshape(tuple(shape), order=order)
    return arr.astype(dtype.newbyteorder("="), copy=True)


# --------------------------------------------------------------------------------------------------------------
# Stand-ins for the allowed callables. Each validates its arguments and returns a record or plain data.


def _reconstruct_persistent_obj(meta: Any) -> _PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise OfficialPickleError("persistent object meta is not a {'type': 'class', 'class_name': ...} dict")
    if not isinstance(meta.get("state"), dict):
        raise OfficialPickleError(f"persistent object {meta['class_name']} has no state dict")
    return _PersistentRecord(meta)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorRecord:
    # requires_grad / hooks / metadata only matter to autograd; the values are the storage view.
    return _TensorRecord(storage, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRecord:
    return _TensorRecord(storage, offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None,
                       state: Any = None) -> _TensorRecord:
    if not isinstance(data, _TensorRecord):
        raise OfficialPickleError(f"parameter built from {type(data).__name__}, not from a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> _TensorRecord:
    # Used for tensors that carry Python attributes; only plain tensors rebuilt by an allowed function are read.
    rebuild = func.fn if isinstance(func, _Global) else None
    plain_tensor = new_type is _TENSOR and rebuild in (_rebuild_tensor_v2, _rebuild_tensor)
    if not plain_tensor or not isinstance(args, tuple):
        raise OfficialPickleError("unsupported tensor subclass in _rebuild_from_type_v2")
    return func(*args)


def _np_scalar(dtype: Any, data: Any = None) -> np.generic:
    if not isinstance(dtype, _DTypeRecord) or not isinstance(data, bytes):
        raise OfficialPickleError("numpy scalar without a plain dtype and bytes")
    return _array_from_bytes(data, dtype.dtype, (), "C")[()]


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> _NdarrayRecord:
    if subtype is not _NDARRAY:
        raise OfficialPickleError("numpy _reconstruct of something other than numpy.ndarray")
    return _NdarrayRecord()


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # numpy's protocol-5 array reduction; ``dtype`` arrives as a pickled numpy.dtype.
    if not isinstance(dtype, _DTypeRecord) or order not in ("C", "F"):
        raise OfficialPickleError("numpy _frombuffer with an unsupported dtype or order")
    return _array_from_bytes(buf, dtype.dtype, shape, order)


def _make_module_record(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (_PlainModuleRecord,), {"torch_class": qualname})


# torch storage type name -> (numpy dtype, is bfloat16). bfloat16 storages are read as raw uint16.
_STORAGE_DTYPES: dict[str, tuple[np.dtype, bool]] = {
    "FloatStorage": (np.dtype("<f4"), False),
    "DoubleStorage": (np.dtype("<f8"), False),
    "HalfStorage": (np.dtype("<f2"), False),
    "BFloat16Storage": (np.dtype("<u2"), True),
    "LongStorage": (np.dtype("<i8"), False),
    "IntStorage": (np.dtype("<i4"), False),
    "ShortStorage": (np.dtype("<i2"), False),
    "CharStorage": (np.dtype("i1"), False),
    "ByteStorage": (np.dtype("u1"), False),
    "BoolStorage": (np.dtype("?"), False),
    "ComplexFloatStorage": (np.dtype("<c8"), False),
    "ComplexDoubleStorage": (np.dtype("<c16"), False),
    "UntypedStorage": (np.dtype("u1"), False),
}


class _StorageType(_Marker):
    """Stand-in for ``torch.FloatStorage`` etc.: only ever used as the type field of a storage persistent id."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        super().__init__(f"torch.{name}")
        self.name = name


# Plain torch.nn modules that may appear as (non-persistent) submodules. They become passive records.
_PLAIN_TORCH_MODULES = {
    "torch.nn.modules.container": ("Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"),
    "torch.nn.modules.linear": ("Identity", "Linear"),
    "torch.nn.modules.conv": ("Conv2d", "ConvTranspose2d"),
    "torch.nn.modules.activation": ("LeakyReLU", "ReLU", "Tanh", "Sigmoid"),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.flatten": ("Flatten",),
}

# The explicit allowlist: (module, name) -> our stand-in. Nothing outside this table can be loaded. Functions
# are wrapped in _Global; the only classes handed out are those that NEWOBJ needs (EasyDict, plain torch modules)
# and collections.OrderedDict, all of which reject or safely absorb BUILD.
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x and 2.x spellings
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("numpy", "dtype"): _DTypeRecord,
    **{(m, "scalar"): _np_scalar for m in _NUMPY_MULTIARRAY},
    **{(m, "_reconstruct"): _np_reconstruct for m in _NUMPY_MULTIARRAY},
    **{(m, "_frombuffer"): _np_frombuffer for m in _NUMPY_NUMERIC},
}
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{key: _Global(fn, ".".join(key)) for key, fn in _ALLOWED_FUNCTIONS.items()},
    ("torch.storage", "_load_from_bytes"): None,  # bound per unpickler: it recurses with the same restrictions
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDictRecord,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("numpy", "ndarray"): _NDARRAY,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    **{(m, n): _make_module_record(f"{m}.{n}") for m, names in _PLAIN_TORCH_MODULES.items() for n in names},
}

_MAX_NESTING = 4  # storages are one level deep in practice; bound it so a crafted file cannot recurse forever


# --------------------------------------------------------------------------------------------------------------
# The restricted unpickler and the nested torch.save reader.


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from ``_ALLOWED_GLOBALS``.

    ``storage_loader`` is set only for the main pickle inside a nested ``torch.save`` payload: it resolves
    ``('storage', ...)`` persistent ids; everywhere else a persistent id is refused.
    """

    def __init__(self, file: io.BufferedIOBase, source: str, depth: int = 0,
                 storage_loader: Callable[[tuple], _StorageRecord] | None = None):
        super().__init__(file)
        self._source = source
        self._depth = depth
        self._storage_loader = storage_loader

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key not in _ALLOWED_GLOBALS:
            detail = "legacy TensorFlow pickles must be converted with the official legacy.py first" if (
                module.startswith("dnnlib.tflib")) else ""
            raise UnsafePickleError(self._source, module, name, detail)
        if key == ("torch.storage", "_load_from_bytes"):
            return _Global(self._load_from_bytes, "torch.storage._load_from_bytes")
        return _ALLOWED_GLOBALS[key]

    def persistent_load(self, pid: Any) -> Any:
        if self._storage_loader is None:
            raise UnsafePickleError(self._source, "<persistent_load>", repr(pid)[:80],
                                    "persistent ids are only valid inside a nested torch.save payload")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(self._source, "<persistent_load>", repr(pid)[:80], "not a ('storage', ...) id")
        return self._storage_loader(pid)

    def _load_from_bytes(self, payload: Any) -> Any:
        if not isinstance(payload, bytes | bytearray):
            raise OfficialPickleError(f"{self._source}: torch.storage._load_from_bytes without a byte string")
        if self._depth + 1 > _MAX_NESTING:
            raise OfficialPickleError(f"{self._source}: nested torch.save payloads more than {_MAX_NESTING} deep")
        return _load_torch_save_bytes(bytes(payload), f"{self._source} (nested storage bytes)", self._depth + 1)


def _restricted_load(data: bytes | io.BufferedIOBase, source: str, depth: int = 0,
                     storage_loader: Callable[[tuple], _StorageRecord] | None = None) -> Any:
    f = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    return _RestrictedUnpickler(f, source, depth, storage_loader).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _storage_from_pid(pid: tuple, byteorder: str) -> _StorageRecord:
    stype: _StorageType = pid[1]
    numel = pid[4]
    if not _is_int(numel) or numel < 0:
        raise OfficialPickleError(f"storage persistent id with bad element count {numel!r}")
    dtype, bf16 = _STORAGE_DTYPES[stype.name]
    return _StorageRecord(dtype.newbyteorder(byteorder) if dtype.itemsize > 1 else dtype, numel, bf16)


def _load_torch_save_bytes(payload: bytes, source: str, depth: int) -> Any:
    """Parse a ``torch.save`` byte string (zip or legacy format) with the restricted unpickler."""
    if payload[:4] == b"PK\x03\x04":
        return _load_torch_zip(payload, source, depth)
    return _load_torch_legacy(payload, source, depth)


def _load_torch_zip(payload: bytes, source: str, depth: int) -> Any:
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        # torch.save stores its entries uncompressed; refusing compression rules out decompression bombs.
        if any(info.compress_type != zipfile.ZIP_STORED for info in zf.infolist()):
            raise OfficialPickleError(f"{source}: compressed entries in a torch.save archive")
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise OfficialPickleError(f"{source}: torch.save zip archive without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            byteorder = {"little": "<", "big": ">"}.get(zf.read(prefix + "byteorder").decode().strip(), None)
            if byteorder is None:
                raise OfficialPickleError(f"{source}: unknown byteorder entry in torch.save archive")
        storages: dict[str, _StorageRecord] = {}

        def load_storage(pid: tuple) -> _StorageRecord:
            key = pid[2]
            if not isinstance(key, str) or prefix + "data/" + key not in names:
                raise OfficialPickleError(f"{source}: storage {key!r} missing from torch.save archive")
            if key not in storages:
                rec = _storage_from_pid(pid, byteorder)
                raw = zf.read(prefix + "data/" + key)
                if len(raw) < rec.numel * rec.dtype.itemsize:
                    raise OfficialPickleError(f"{source}: storage {key!r} has {len(raw)} bytes, too few")
                arr = np.frombuffer(raw, dtype=rec.dtype, count=rec.numel)
                rec.set_data(arr.astype(rec.dtype.newbyteorder("="), copy=True))
                storages[key] = rec
            return storages[key]

        return _restricted_load(zf.read(pkl[0]), source, depth, load_storage)


def _load_torch_legacy(payload: bytes, source: str, depth: int) -> Any:
    f = io.BytesIO(payload)
    # The header pickles hold only ints / dicts / lists: load them with the same restrictions.
    if _restricted_load(f, source, depth) != _LEGACY_MAGIC:
        raise OfficialPickleError(f"{source}: nested storage bytes are not a torch.save payload (bad magic number)")
    if _restricted_load(f, source, depth) != _LEGACY_PROTOCOL:
        raise OfficialPickleError(f"{source}: unsupported legacy torch.save protocol version")
    sys_info = _restricted_load(f, source, depth)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    byteorder = "<" if little else ">"

    storages: dict[str, _StorageRecord] = {}

    def load_storage(pid: tuple) -> _StorageRecord:
        key, view = pid[2], pid[5] if len(pid) > 5 else None
        if not isinstance(key, str):
            raise OfficialPickleError(f"{source}: storage persistent id with a non-string key")
        if key not in storages:
            storages[key] = _storage_from_pid(pid, byteorder)
        if view is None:
            return storages[key]
        # Old torch pickled storage views as (view_key, offset, numel) of the root storage.
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])):
            raise OfficialPickleError(f"{source}: malformed storage view metadata")
        root = storages[key]
        return _StorageRecord(root.dtype, view[2], root.bfloat16, base=root, offset=view[1])

    result = _restricted_load(f, source, depth, load_storage)
    keys = _restricted_load(f, source, depth)
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise OfficialPickleError(f"{source}: storage key list does not match the storages referenced")
    # Each storage follows as an int64 element count and its raw bytes.
    for key in keys:
        rec = storages[key]
        head = f.read(8)
        if len(head) != 8:
            raise OfficialPickleError(f"{source}: storage {key!r} is truncated")
        (numel,) = struct.unpack(byteorder + "q", head)
        if numel != rec.numel:
            raise OfficialPickleError(f"{source}: storage {key!r} holds {numel} elements, expected {rec.numel}")
        raw = f.read(numel * rec.dtype.itemsize)
        if len(raw) != numel * rec.dtype.itemsize:
            raise OfficialPickleError(f"{source}: storage {key!r} is truncated")
        rec.set_data(np.frombuffer(raw, dtype=rec.dtype).astype(rec.dtype.newbyteorder("="), copy=True))
    return result


# --------------------------------------------------------------------------------------------------------------
# From records to plain data.


def _plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace records by their values (tensors -> arrays, EasyDict -> dict) recursively; modules stay records."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _TensorRecord):
        out: Any = obj.materialize()
    elif isinstance(obj, _PersistentRecord):
        out = _PersistentRecord({})
        memo[id(obj)] = out
        out.meta = _plain(obj.meta, memo)
        return out
    elif isinstance(obj, _PlainModuleRecord):
        out = type(obj).__new__(type(obj))
        memo[id(obj)] = out
        out.__dict__["_state"] = _plain(obj.__dict__.get("_state"), memo)
        return out
    elif isinstance(obj, _NdarrayRecord):
        if obj.array is None:
            raise OfficialPickleError("numpy array without data")
        out = obj.array
    elif isinstance(obj, _DTypeRecord):
        out = obj.dtype
    elif isinstance(obj, dict) and not isinstance(obj, collections.OrderedDict):
        out = {}
        memo[id(obj)] = out
        out.update((_plain(k, memo), _plain(v, memo)) for k, v in obj.items())
        return out
    elif isinstance(obj, collections.OrderedDict):
        out = collections.OrderedDict()
        memo[id(obj)] = out
        out.update((_plain(k, memo), _plain(v, memo)) for k, v in obj.items())
        return out
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = out
        out.extend(_plain(v, memo) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_plain(v, memo) for v in obj)
    elif isinstance(obj, set | frozenset):
        out = type(obj)(_plain(v, memo) for v in obj)
    else:
        out = obj  # str, numbers, None, numpy scalars/arrays, module records
    memo[id(obj)] = out
    return out


def _module_state(obj: Any) -> tuple[str, dict] | None:
    """(class name, state dict) of a persistent or plain-torch module record, else None."""
    if isinstance(obj, _PersistentRecord):
        return obj.meta["class_name"], obj.meta["state"]
    if isinstance(obj, _PlainModuleRecord):
        state = obj.__dict__.get("_state")
        if state is None:
            raise OfficialPickleError(f"{obj.torch_class} module without state")
        return obj.torch_class, state
    return None


# Which official module a class tree comes from. The pickle stores only bare class names (the module is
# re-created from module_src under a random name), so this is inferred from classes only that module defines.
_ARCH_MARKERS = (
    ("SynthesisInput", "stylegan3", "training.networks_stylegan3"),
    ("SynthesisBlock", "stylegan2", "training.networks_stylegan2"),
    ("DiscriminatorEpilogue", "stylegan2", "training.networks_stylegan2"),
    ("AugmentPipe", "augment", "training.augment"),
)

# Keys of a torch module's __dict__ that are torch internals, not attributes of the network.
_TORCH_INTERNAL = re.compile(r"^(training|_.*)$")


@dataclass
class NetworkRecord:
    """One network of an official pickle, as data.

    ``class_name`` is the bare name the pickle stores (``'Generator'``); ``qualified_class_name`` adds the
    official module inferred from the class tree (``'training.networks_stylegan3.Generator'``) when known.
    ``state_dict`` has exactly the names and values ``module.state_dict()`` gives (parameters, then
    persistent non-None buffers, then submodules, recursively). ``module_classes`` maps each submodule path
    (``''`` for the root) to its class name; ``module_attributes`` maps it to its plain attributes
    (``sampling_rate``, ``up_taps``, ``layer_names``, ...).
    """

    class_name: str
    qualified_class_name: str | None
    architecture: str | None
    init_args: tuple
    init_kwargs: dict[str, Any]
    state_dict: dict[str, np.ndarray]
    module_classes: dict[str, str] = field(default_factory=dict)
    module_attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    persistence_version: int | None = None
    module_src: str | None = None


@dataclass
class OfficialPickle:
    """The contents of an official network pickle. ``G``, ``D`` and ``augment_pipe`` may be None
    (the official loader accepts pickles with only ``G_ema``)."""

    G_ema: NetworkRecord
    G: NetworkRecord | None
    D: NetworkRecord | None
    augment_pipe: NetworkRecord | None
    training_set_kwargs: dict[str, Any] | None
    path: str = ""


def _network_record(obj: Any, key: str, source: str) -> NetworkRecord:
    root = _module_state(obj)
    if root is None:
        raise OfficialPickleError(
            f"{source}: '{key}' is a {type(obj).__name__}, not a torch_utils.persistence network object"
        )
    state_dict: dict[str, np.ndarray] = {}
    classes: dict[str, str] = {}
    attributes: dict[str, dict[str, Any]] = {}

    def visit(mod: Any, prefix: str, depth: int) -> None:
        cls, state = _module_state(mod)  # type: ignore[misc]
        path = prefix[:-1]
        if depth > 100 or path in classes:
            raise OfficialPickleError(f"{source}: '{key}' has a cyclic or absurdly deep module tree at '{path}'")
        classes[path] = cls
        params, buffers, modules = (state.get(k, {}) for k in ("_parameters", "_buffers", "_modules"))
        non_persistent = state.get("_non_persistent_buffers_set", set())
        if not all(isinstance(d, dict) for d in (params, buffers, modules)):
            raise OfficialPickleError(f"{source}: '{key}' module '{path}' has malformed _parameters/_buffers/_modules")
        # Same order as torch's Module.state_dict(): parameters, persistent buffers, then children.
        for group, skip in ((params, set()), (buffers, non_persistent)):
            for name, value in group.items():
                if value is None or name in skip:
                    continue
                if not isinstance(value, np.ndarray):
                    raise OfficialPickleError(f"{source}: '{key}' entry '{prefix}{name}' is not a tensor")
                state_dict[prefix + name] = value
        attributes[path] = {k: v for k, v in state.items() if not _TORCH_INTERNAL.match(k)}
        for name, child in modules.items():
            if child is None:
                continue
            if _module_state(child) is None:
                raise OfficialPickleError(f"{source}: '{key}' submodule '{prefix}{name}' is not a module")
            visit(child, f"{prefix}{name}.", depth + 1)

    visit(obj, "", 0)
    class_name, state = root
    arch = module = None
    for marker, a, m in _ARCH_MARKERS:
        if marker in classes.values():
            arch, module = a, m
            break
    init_args = state.get("_init_args", ())
    init_kwargs = state.get("_init_kwargs", {})
    if not isinstance(init_args, tuple | list) or not isinstance(init_kwargs, dict):
        raise OfficialPickleError(f"{source}: '{key}' has malformed _init_args / _init_kwargs")
    meta = obj.meta if isinstance(obj, _PersistentRecord) else {}
    return NetworkRecord(
        class_name=class_name,
        qualified_class_name=f"{module}.{class_name}" if module and "." not in class_name else None,
        architecture=arch,
        init_args=tuple(init_args),
        init_kwargs=_to_builtin(init_kwargs),
        state_dict=state_dict,
        module_classes=classes,
        module_attributes=attributes,
        persistence_version=meta.get("version"),
        module_src=meta.get("module_src"),
    )


def _to_builtin(obj: Any) -> Any:
    """EasyDict / OrderedDict -> dict, recursively, so kwargs are plain data."""
    if isinstance(obj, dict):
        return {k: _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_builtin(v) for v in obj)
    return obj


_NETWORK_KEYS = ("G", "D", "G_ema", "augment_pipe")


def load_official_pickle_bytes(data: bytes, source: str = "<bytes>") -> OfficialPickle:
    """Parse an official network pickle held in memory; ``source`` names it in error messages.

    See :func:`load_official_pickle`.
    """
    if not data:
        raise OfficialPickleError(f"{source}: empty file")
    try:
        return _parse(_plain(_restricted_load(data, source)), source)
    except UnsafePickleError:
        raise  # already names the file, the module and the name
    except OfficialPickleError as e:
        # Raised by a stand-in that does not know the file name; add it.
        msg = str(e) if str(e).startswith(source) else f"{source}: {e}"
        raise OfficialPickleError(msg) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, zipfile.BadZipFile, OverflowError, RecursionError, UnicodeDecodeError, MemoryError) as e:
        # Truncation and corruption surface as any of these from inside pickle; report them uniformly, without
        # chaining a traceback from pickle's internals.
        what = "truncated" if isinstance(e, EOFError) or "truncated" in str(e) else "corrupt"
        raise OfficialPickleError(f"{source}: {what} or unreadable pickle ({type(e).__name__}: {e})") from None


def _parse(obj: Any, source: str) -> OfficialPickle:
    if not isinstance(obj, dict):
        raise OfficialPickleError(
            f"{source}: not an official network pickle: top level is a {type(obj).__name__}, "
            "expected a dict with 'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'"
        )
    if "G_ema" not in obj:
        present = sorted(map(str, obj))[:10]
        raise OfficialPickleError(f"{source}: not an official network pickle: missing 'G_ema' (keys: {present})")
    nets = {k: _network_record(obj[k], k, source) if obj.get(k) is not None else None for k in _NETWORK_KEYS}
    if nets["G_ema"] is None:
        raise OfficialPickleError(f"{source}: not an official network pickle: 'G_ema' is None")
    tsk = obj.get("training_set_kwargs")
    if tsk is not None and not isinstance(tsk, dict):
        raise OfficialPickleError(f"{source}: training_set_kwargs is a {type(tsk).__name__}, expected a dict")
    return OfficialPickle(
        G_ema=nets["G_ema"],
        G=nets["G"],
        D=nets["D"],
        augment_pipe=nets["augment_pipe"],
        training_set_kwargs=_to_builtin(tsk) if tsk is not None else None,
        path=source,
    )


def load_official_pickle(path: str | Path) -> OfficialPickle:
    """Read an official StyleGAN2/3 network pickle without torch and without executing anything from it.

    Raises :class:`UnsafePickleError` if the file names any global outside the allowlist (nothing is run),
    and :class:`OfficialPickleError` if it is truncated, corrupt or not in the official layout.
    """
    path = Path(path)
    return load_official_pickle_bytes(path.read_bytes(), path.name)
