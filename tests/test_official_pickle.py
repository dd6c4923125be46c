"""Safe reader for official NVIDIA network pickles: the fixture, malicious pickles, corrupt files, other layouts."""

import collections
import io
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stylegan_jax.convert.official_pickle import (
    OfficialPickleError,
    UnsafePickleError,
    load_official_pickle,
    load_official_pickle_bytes,
)
from tests.pickle_writer import (
    Glob,
    NewObj,
    Storage,
    StorageRef,
    Tensor,
    dumps,
    module_state,
    official_layout,
    persistent,
    tensor,
)

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL_PKL = FIXTURES / "sg3t_32_official_format.pkl"


@pytest.fixture(scope="module")
def official():
    return load_official_pickle(OFFICIAL_PKL)


def nested_storage_blobs(data: bytes) -> list[bytes]:
    """Raw data of every nested legacy torch.save storage, found with pickletools alone (independent of the loader)."""
    out = []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8") and arg.startswith(b"\x80\x02\x8a\n"):
            f = io.BytesIO(arg)
            for _ in range(5):  # magic, protocol, sys_info, storage pickle, key list
                for _ in pickletools.genops(f):
                    pass
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read()
            assert len(raw) % numel == 0
            out.append(raw)
    return out


# ----------------------------------------------------------------------------------------------------------------
# (a) The official-format fixture.


def test_fixture_loads_networks_and_kwargs(official, load_fixture):
    expected = load_fixture("sg3t_32_official_format_expected.npz").meta
    assert official.G is not None and official.G_ema is not None and official.D is not None
    assert official.augment_pipe is None  # the fixture stores None, as a snapshot without augmentation does
    for net in (official.G, official.G_ema):
        assert net.class_name == "Generator"
        assert net.qualified_class_name == "training.networks_stylegan3.Generator"
        assert net.init_args == ()
        assert net.init_kwargs == expected["G_kwargs"]
        assert {"z_dim", "w_dim", "c_dim", "img_resolution", "img_channels"} <= set(net.init_kwargs)
        assert net.persistence_version == 6
    assert official.D.qualified_class_name == "training.networks_stylegan2.Discriminator"
    assert official.D.init_kwargs == expected["D_kwargs"]
    assert official.training_set_kwargs["class_name"] == "training.dataset.ImageFolderDataset"
    assert official.training_set_kwargs["resolution"] == 32
    assert "torch" not in sys.modules


def test_fixture_g_ema_layout_matches_other_fixtures(official, load_fixture):
    """Same names, order and ranks as the G/ keys of sg3t_64.npz, once the layer names' sizes are dropped."""
    ref = load_fixture("sg3t_64.npz")
    ref_keys = [k[2:] for k in ref if k.startswith("G/")]

    def norm(k: str) -> str:
        return re.sub(r"\.L(\d+)_\d+_\d+\.", r".L\1.", k)

    sd = official.G_ema.state_dict
    assert [norm(k) for k in sd] == [norm(k) for k in ref_keys]
    ref_by_norm = {norm(k): ref["G/" + k] for k in ref_keys}
    for k, v in sd.items():
        assert v.ndim == ref_by_norm[norm(k)].ndim, k
    assert list(official.G.state_dict) == list(sd)

    kw = official.G_ema.init_kwargs
    w_dim, z_dim = kw["w_dim"], kw["z_dim"]
    assert sd["mapping.w_avg"].shape == (w_dim,)
    assert sd["mapping.fc0.weight"].shape == (w_dim, z_dim)
    assert sd["synthesis.input.transform"].shape == (3, 3)
    layer_names = official.G_ema.module_attributes["synthesis"]["layer_names"]
    assert len(layer_names) == 15 and layer_names[-1] == "L14_32_3"
    for name in layer_names:
        attrs = official.G_ema.module_attributes[f"synthesis.{name}"]
        assert official.G_ema.module_classes[f"synthesis.{name}"] == "SynthesisLayer"
        k = attrs["conv_kernel"]
        assert sd[f"synthesis.{name}.weight"].shape == (attrs["out_channels"], attrs["in_channels"], k, k)
        assert sd[f"synthesis.{name}.affine.weight"].shape == (attrs["in_channels"], w_dim)
        if attrs["is_torgb"]:
            assert f"synthesis.{name}.up_filter" not in sd and f"synthesis.{name}.down_filter" not in sd
            continue
        # Official filter_size=6 taps per unit of up/down factor; 24 taps exactly where the sampling rate doubles.
        assert sd[f"synthesis.{name}.up_filter"].shape == (attrs["up_taps"],) == (6 * attrs["up_factor"],)
        assert sd[f"synthesis.{name}.down_filter"].shape == (attrs["down_taps"],) == (12,)
        assert (attrs["up_taps"] == 24) == (attrs["out_sampling_rate"] > attrs["in_sampling_rate"])


def test_fixture_values_are_finite_float32_and_bitwise_stored(official):
    sd = official.G_ema.state_dict
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and v.dtype == np.float32, k
        assert np.isfinite(v).all(), k
        assert v.flags.c_contiguous and v.flags.owndata, k
    w_avg = sd["mapping.w_avg"]
    assert w_avg.shape == (official.G_ema.init_kwargs["w_dim"],) and np.abs(w_avg).max() > 0
    assert all(sd[k].size > 0 for k in sd if k.endswith("_filter"))

    # Every tensor of every network is a whole storage: its bytes must be exactly one stored storage's bytes.
    blobs = nested_storage_blobs(OFFICIAL_PKL.read_bytes())
    nets = (official.G, official.D, official.G_ema)
    assert len(blobs) == sum(len(n.state_dict) for n in nets)
    stored = set(blobs)
    for net in nets:
        for k, v in net.state_dict.items():
            assert v.tobytes() in stored, k
    assert not all(np.array_equal(official.G.state_dict[k], sd[k]) for k in sd)  # G and G_ema are distinct nets


def test_discriminator_state_dict_names(official):
    sd = official.D.state_dict
    assert list(sd)[:4] == ["b32.resample_filter", "b32.fromrgb.weight", "b32.fromrgb.bias",
                            "b32.fromrgb.resample_filter"]
    assert sd["b32.resample_filter"].shape == (4, 4)
    assert "b4.out.weight" in sd and "b4.mbstd.weight" not in sd


# ----------------------------------------------------------------------------------------------------------------
# Synthetic official-format pickles: the parts of the format the fixture does not exercise.


def test_synthetic_views_plain_modules_buffers_and_zip_storages():
    base = np.arange(20, dtype=np.float32)
    shared = Storage(base)
    transposed = Tensor(shared, 2, (3, 4), (1, 3))  # a strided, offset view of a shared storage
    window = Tensor(shared, 5, (2,), (1,))
    bf16_bits = (np.array([1.5, -2.0, 3.25], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    bf16 = Tensor(Storage(bf16_bits, type_name="BFloat16Storage"), 0, (3,), (1,), param=True)
    kwargs_items = {"z_dim": 4, "mapping_kwargs": NewObj(Glob("dnnlib.util", "EasyDict"), {"num_layers": 2})}
    kwargs = NewObj(Glob("dnnlib.util", "EasyDict"), kwargs_items)
    layer = persistent("Layer", module_state(params={"w": tensor(np.ones((2, 2)), param=True, fmt="zip"), "b": bf16}))
    plain_list = NewObj(Glob("torch.nn.modules.container", "ModuleList"), state=module_state(modules={"0": layer}))
    root = persistent("Generator", module_state(
        params={"p": tensor(np.array([[1, 2, 3], [4, 5, 6]]), param=True), "gone": None},
        buffers={"t": transposed, "nb": window, "none": None}, non_persistent={"nb"},
        modules={"seq": plain_list, "skip": None}, z_dim=4, _init_args=(), _init_kwargs=kwargs))
    data = dumps(official_layout(root))
    result = load_official_pickle_bytes(data, "synthetic.pkl")
    net = result.G_ema
    assert list(net.state_dict) == ["p", "t", "seq.0.w", "seq.0.b"]
    np.testing.assert_array_equal(net.state_dict["p"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(net.state_dict["t"], np.lib.stride_tricks.as_strided(base[2:], (3, 4), (4, 12)))
    np.testing.assert_array_equal(net.state_dict["seq.0.w"], np.ones((2, 2)))
    np.testing.assert_array_equal(net.state_dict["seq.0.b"], [1.5, -2.0, 3.25])
    assert net.state_dict["seq.0.b"].dtype == np.float32
    assert net.init_kwargs == {"z_dim": 4, "mapping_kwargs": {"num_layers": 2}}
    assert type(net.init_kwargs) is dict and type(net.init_kwargs["mapping_kwargs"]) is dict
    assert net.module_classes == {"": "Generator", "seq": "torch.nn.modules.container.ModuleList", "seq.0": "Layer"}
    assert net.module_attributes[""] == {"z_dim": 4}
    assert result.G is None and result.D is None


def test_module_src_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('x')\n"
    G_ema = persistent("Generator", module_state(params={"w": tensor(np.zeros(3), param=True)}), module_src=src)
    result = load_official_pickle_bytes(dumps(official_layout(G_ema)), "src.pkl")
    assert result.G_ema.module_src == src
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# (b) Malicious pickles are refused before anything runs.


class _ReduceTo:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').write('x')"
    return {
        "os.system": pickle.dumps(_ReduceTo(os.system, (cmd,))),
        "builtins.exec": pickle.dumps(_ReduceTo(exec, (code,))),
        "builtins.eval": pickle.dumps(_ReduceTo(eval, (code,))),
        "subprocess.Popen": pickle.dumps(_ReduceTo(subprocess.Popen, (["touch", str(marker)],))),
        "opcodes os.system": b"cos\nsystem\n(V" + cmd.encode() + b"\ntR.",
        "opcodes posix.system": b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd.encode()
        + b"\x85R.",
        "unknown module": b"cmy_evil_module\nrun\n(tR.",
        "inside official layout": dumps(official_layout(_ReduceTo(os.system, (cmd,)))),
        "inside legacy storage bytes": dumps(official_layout(
            Tensor(Storage(np.zeros(2, np.float32), main=_ReduceTo(os.system, (cmd,))), 0, (2,), (1,)))),
        "inside zip storage bytes": dumps(official_layout(
            Tensor(Storage(np.zeros(2, np.float32), "zip", main=_ReduceTo(exec, (code,))), 0, (2,), (1,)))),
    }


@pytest.mark.parametrize("case", [
    "os.system", "builtins.exec", "builtins.eval", "subprocess.Popen", "opcodes os.system",
    "opcodes posix.system", "unknown module", "inside official layout", "inside legacy storage bytes",
    "inside zip storage bytes",
])
def test_malicious_pickles_are_refused(tmp_path, case):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_malicious_payloads(marker)[case])
    with pytest.raises(UnsafePickleError) as err:
        load_official_pickle(path)
    msg = str(err.value)
    assert "evil.pkl" in msg and f"{err.value.module}.{err.value.name}" in msg
    assert err.value.name in ("system", "exec", "eval", "Popen", "run")
    if case.startswith("inside") and "storage" in case:
        assert "nested storage bytes" in msg
    assert not marker.exists()


def test_persistent_ids_outside_storage_payloads_are_refused(tmp_path):
    obj = StorageRef()
    data = dumps(official_layout(obj), 2, {id(obj): ("module", "x")})
    with pytest.raises(UnsafePickleError, match="persistent"):
        load_official_pickle_bytes(data, "pid.pkl")
    # Inside a storage payload, only ('storage', <storage type>, ...) ids are understood.
    bad = Storage(np.zeros(1, np.float32))
    bad.type_name = "NotAStorage"
    with pytest.raises(UnsafePickleError, match="torch.NotAStorage"):
        load_official_pickle_bytes(dumps(official_layout(Tensor(bad, 0, (1,), (1,)))), "pid.pkl")


def test_object_dtype_numpy_arrays_are_refused():
    G_ema = persistent("Generator", module_state(attr=np.array([1, "a"], dtype=object)))
    with pytest.raises(OfficialPickleError, match="dtype"):
        load_official_pickle_bytes(dumps(official_layout(G_ema)), "obj.pkl")


def test_numpy_attributes_are_read():
    G_ema = persistent("Generator", module_state(size=np.array([36, 36]), cutoff=np.float64(4.5), flag=np.bool_(True)))
    attrs = load_official_pickle_bytes(dumps(official_layout(G_ema)), "np.pkl").G_ema.module_attributes[""]
    np.testing.assert_array_equal(attrs["size"], [36, 36])
    assert attrs["cutoff"] == 4.5 and attrs["cutoff"].dtype == np.float64 and attrs["flag"]


# ----------------------------------------------------------------------------------------------------------------
# (c) Truncated / corrupt files; (d) other layouts.


@pytest.mark.parametrize("keep", [0, 1, 11, 1000, 272_000, -9, -1])
def test_truncated_fixture_is_an_official_pickle_error(tmp_path, keep):
    data = OFFICIAL_PKL.read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(OfficialPickleError) as err:
        load_official_pickle(path)
    assert not isinstance(err.value, UnsafePickleError)
    assert "truncated.pkl" in str(err.value)
    assert "empty" in str(err.value) or "truncated" in str(err.value)


def test_corrupt_storage_payload(tmp_path):
    data = bytearray(OFFICIAL_PKL.read_bytes())
    i = data.index(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.")
    data[i + 4] ^= 0xFF  # break the first nested torch.save magic number
    path = tmp_path / "corrupt.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(OfficialPickleError, match=r"corrupt\.pkl.*magic"):
        load_official_pickle(path)


def test_garbage_is_an_official_pickle_error():
    with pytest.raises(OfficialPickleError, match="garbage"):
        load_official_pickle_bytes(b"this is not a pickle at all", "garbage")


@pytest.mark.parametrize(("obj", "expected"), [
    ([1, 2, 3], "top level is a list"),
    ({"G": None, "D": None}, "missing 'G_ema'"),
    ({"G_ema": 3}, "'G_ema' is a int, not a torch_utils.persistence network object"),
    ({"G_ema": {"_parameters": {}}}, "'G_ema' is a dict"),
])
def test_non_official_layouts_are_refused(tmp_path, obj, expected):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(OfficialPickleError, match=re.escape(expected)) as err:
        load_official_pickle(path)
    assert "other.pkl" in str(err.value) and not isinstance(err.value, UnsafePickleError)


@pytest.mark.parametrize("payload", [
    # BUILD on an allowed function, trying to replace its defaults for every later load.
    b"ctorch._utils\n_rebuild_tensor_v2\nN}V__defaults__\n(I1\nts\x86b.",
    b"ctorch_utils.persistence\n_reconstruct_persistent_obj\nN}V__kwdefaults__\n}s\x86b.",
    # BUILD on an allowed class / marker, trying to set class attributes.
    b"cdnnlib.util\nEasyDict\nN}V__setstate__\nI1\ns\x86b.",
    b"ccollections\nOrderedDict\nN}Vx\nI1\ns\x86b.",
    b"cnumpy\nndarray\n}Vqualname\nI1\nsb.",
])
def test_build_cannot_modify_stand_ins(payload):
    from stylegan_jax.convert import official_pickle as op

    defaults = op._rebuild_tensor_v2.__defaults__
    with pytest.raises(OfficialPickleError):
        load_official_pickle_bytes(payload, "build.pkl")
    assert op._rebuild_tensor_v2.__defaults__ == defaults
    assert op._reconstruct_persistent_obj.__kwdefaults__ is None
    assert "__setstate__" in op._EasyDictRecord.__dict__ and callable(op._EasyDictRecord.__setstate__)
    assert not hasattr(collections.OrderedDict, "x")
    assert op._NDARRAY.qualname == "numpy.ndarray"
