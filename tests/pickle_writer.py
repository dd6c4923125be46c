"""Writers for official-format network pickles, without importing (or having) torch.

Shared by ``tests/test_official_pickle.py`` (reader tests, malicious payloads), ``tests/test_convert.py``
(official StyleGAN2 pickles built from a fixture's state dict) and ``tests/test_fid.py`` (a ``torch.save`` state
dict of the FID Inception network). Everything here writes bytes only: the globals
are named with :class:`Glob` and never resolved.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Glob:
    """A reference to module.name, written as a GLOBAL opcode by _Pickler."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that reduce functions are callable
        raise AssertionError("never called")


class _Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, protocol, pids=None):
        super().__init__(file, protocol)
        self._pids = pids or {}

    def persistent_id(self, obj):
        return self._pids.get(id(obj))

    def save_glob(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Glob] = save_glob

    def save_newobj(self, obj):
        # What protocol 2+ writes for instances of dict subclasses / torch modules: cls, (), NEWOBJ, items, BUILD.
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if obj.items:
            self._batch_setitems(iter(obj.items.items()))
        if obj.state is not None:
            self.save(obj.state)
            self.write(pickle.BUILD)


class NewObj:
    def __init__(self, cls: Glob, items: dict | None = None, state=None):
        self.cls, self.items, self.state = cls, items, state


_Pickler.dispatch[NewObj] = _Pickler.save_newobj


def dumps(obj, protocol: int = 4, pids: dict | None = None) -> bytes:
    f = io.BytesIO()
    _Pickler(f, protocol, pids).dump(obj)
    return f.getvalue()


class StorageRef:
    """The object a nested torch.save pickles; the pickler turns it into a ('storage', ...) persistent id."""


class Storage:
    """A torch storage, pickled as torch.storage._load_from_bytes(<nested torch.save bytes>)."""

    def __init__(self, data: np.ndarray, fmt: str = "legacy", type_name: str = "FloatStorage", main=None):
        self.data, self.fmt, self.type_name, self.main = data, fmt, type_name, main

    def torch_save_bytes(self) -> bytes:
        ref = StorageRef()
        numel = self.data.size
        if self.fmt == "legacy":
            pid = ("storage", Glob("torch", self.type_name), "140", "cpu", numel, None)
            sys_info = dict(protocol_version=1001, little_endian=True, type_sizes=dict(short=2, int=4, long=8))
            main = dumps(self.main if self.main is not None else ref, 2, {id(ref): pid})
            return (pickle.dumps(LEGACY_MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps(sys_info, 2) + main
                    + pickle.dumps(["140"], 2) + struct.pack("<q", numel) + self.data.tobytes())
        pid = ("storage", Glob("torch", self.type_name), "0", "cpu", numel)
        return torch_zip(dumps(self.main if self.main is not None else ref, 2, {id(ref): pid}),
                         [self.data.tobytes()])

    def __reduce__(self):
        return Glob("torch.storage", "_load_from_bytes"), (self.torch_save_bytes(),)


def torch_zip(data_pkl: bytes, storages: list[bytes]) -> bytes:
    """A ``torch.save`` zip archive (stored, not compressed): the pickle, then storage ``i`` as ``data/i``."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for i, raw in enumerate(storages):
            zf.writestr(f"archive/data/{i}", raw)
        zf.writestr("archive/version", "3\n")
    return f.getvalue()


# Storage classes of the dtypes torch_save_state_dict writes.
STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


def torch_save_state_dict(state_dict: Mapping[str, np.ndarray]) -> bytes:
    """The bytes ``torch.save`` writes for a state dict of tensors (zip format, one storage per tensor), e.g. a
    ``pt_inception-*.pth`` weight file."""
    pids, storages, tensors = {}, [], collections.OrderedDict()
    for i, (name, arr) in enumerate(state_dict.items()):
        ref = StorageRef()
        pids[id(ref)] = ("storage", Glob("torch", STORAGE_TYPES[arr.dtype]), str(i), "cpu", arr.size)
        storages.append(np.ascontiguousarray(arr).tobytes())
        shape = tuple(arr.shape)
        stride = tuple(int(np.prod(shape[j + 1:])) for j in range(len(shape)))
        tensors[name] = _Reduce(Glob("torch._utils", "_rebuild_tensor_v2"),
                                (ref, 0, shape, stride, False, collections.OrderedDict()))
    return torch_zip(dumps(tensors, 2, pids), storages)


class Tensor:
    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple, param: bool = False):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.param = param

    def __reduce__(self):
        tensor = _Reduce(Glob("torch._utils", "_rebuild_tensor_v2"), self.args)
        if self.param:
            return Glob("torch._utils", "_rebuild_parameter"), (tensor, True, collections.OrderedDict())
        return tensor.__reduce__()


class _Reduce:
    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def tensor(arr: np.ndarray, param: bool = False, fmt: str = "legacy") -> Tensor:
    arr = np.array(arr, dtype=np.float32, order="C")  # not ascontiguousarray: it turns 0-d tensors into 1-d
    stride = tuple(s // 4 for s in arr.strides)
    return Tensor(Storage(arr.ravel(), fmt), 0, arr.shape, stride, param)


def module_state(params=None, buffers=None, modules=None, non_persistent=(), **attrs) -> dict:
    return dict(training=False, _parameters=collections.OrderedDict(params or {}),
                _buffers=collections.OrderedDict(buffers or {}), _non_persistent_buffers_set=set(non_persistent),
                _forward_hooks=collections.OrderedDict(), _modules=collections.OrderedDict(modules or {}), **attrs)


def persistent(class_name: str, state: dict, module_src: str = "# placeholder\n") -> _Reduce:
    meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)
    return _Reduce(Glob("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))


def official_layout(G_ema, **extra) -> dict:
    return dict(G=extra.get("G"), D=extra.get("D"), G_ema=G_ema, augment_pipe=None,
                training_set_kwargs=extra.get("training_set_kwargs"))


def easydict(items: Mapping) -> NewObj:
    """A ``dnnlib.util.EasyDict`` (how the official training script passes constructor kwargs), nested."""
    return NewObj(Glob("dnnlib.util", "EasyDict"),
                  {k: easydict(v) if isinstance(v, Mapping) else v for k, v in items.items()})


# ----------------------------------------------------------------------------------------------------------------
# Whole official networks from flat state dicts.

# Official buffer names (everything else in a state dict is a parameter).
OFFICIAL_BUFFERS = frozenset({"noise_const", "resample_filter", "w_avg", "magnitude_ema", "up_filter", "down_filter",
                              "freqs", "phases", "transform"})


def stylegan2_generator_class(path: str) -> str:
    """Class of the submodule at ``path`` of an official ``training.networks_stylegan2.Generator``."""
    parts = path.split(".") if path else []
    if not parts:
        return "Generator"
    if parts[-1] == "affine" or (parts[0] == "mapping" and len(parts) == 2):
        return "FullyConnectedLayer"
    if parts == ["synthesis"]:
        return "SynthesisNetwork"
    if parts == ["mapping"]:
        return "MappingNetwork"
    if len(parts) == 2:
        return "SynthesisBlock"
    return {"torgb": "ToRGBLayer", "skip": "Conv2dLayer"}.get(parts[-1], "SynthesisLayer")


def stylegan2_discriminator_class(path: str, img_resolution: int) -> str:
    """Class of the submodule at ``path`` of an official ``training.networks_stylegan2.Discriminator``."""
    parts = path.split(".") if path else []
    if not parts:
        return "Discriminator"
    if parts == ["mapping"]:
        return "MappingNetwork"
    if parts[0] == "mapping" or parts[-1] in ("fc", "out"):
        return "FullyConnectedLayer"
    if parts == ["b4"]:
        return "DiscriminatorEpilogue"
    if len(parts) == 1:
        return "DiscriminatorBlock"
    return "Conv2dLayer"


def official_network(state_dict: Mapping[str, np.ndarray], class_of: Callable[[str], str],
                     init_kwargs: Mapping | None = None, fmt: str = "legacy"):
    """A persistent network object whose ``state_dict()`` is ``state_dict`` (official names, order kept).

    ``class_of(path)`` names the class of the submodule at ``path`` (``''`` = the root); entries named in
    :data:`OFFICIAL_BUFFERS` become buffers, the rest parameters; ``init_kwargs`` become ``_init_kwargs`` of the
    root (as an EasyDict, like the official training script's).
    """
    tree: dict = {"params": {}, "buffers": {}, "modules": {}}
    for key, value in state_dict.items():
        *path, name = key.split(".")
        node = tree
        for part in path:
            node = node["modules"].setdefault(part, {"params": {}, "buffers": {}, "modules": {}})
        is_buffer = name in OFFICIAL_BUFFERS
        node["buffers" if is_buffer else "params"][name] = tensor(np.asarray(value), param=not is_buffer, fmt=fmt)

    def build(node: dict, path: str, root: bool):
        modules = {name: build(child, f"{path}.{name}" if path else name, False)
                   for name, child in node["modules"].items()}
        extra = dict(_init_args=(), _init_kwargs=easydict(init_kwargs or {})) if root else {}
        return persistent(class_of(path), module_state(node["params"], node["buffers"], modules, **extra))

    return build(tree, "", True)


__all__ = [
    "LEGACY_MAGIC",
    "OFFICIAL_BUFFERS",
    "Glob",
    "NewObj",
    "Storage",
    "StorageRef",
    "Tensor",
    "dumps",
    "easydict",
    "module_state",
    "official_layout",
    "official_network",
    "persistent",
    "stylegan2_discriminator_class",
    "stylegan2_generator_class",
    "tensor",
    "torch_save_state_dict",
    "torch_zip",
]
