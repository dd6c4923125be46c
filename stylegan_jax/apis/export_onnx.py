"""Export a StyleGAN3 or StyleGAN2 generator to ONNX through jax2onnx.

The exported graph is the whole ``G(z, c, psi)`` forward pass with the weights baked in as initializers. For a
StyleGAN2 generator the noise inputs are baked in as ``noise_mode='const'`` (the noise images stored with the
weights, the default of the official ``gen_images.py``): the graph is deterministic and has no noise input.

========  ==================================  =======================================================
name      type / shape                        meaning
========  ==================================  =======================================================
``z``     float32 ``[N, z_dim]``              latents; ``N`` is a dynamic batch dimension
``c``     float32 ``[N, c_dim]``              labels (one-hot for class-conditional models); only
                                              present when ``c_dim > 0``
``psi``   float32 ``[]`` (a 0-d tensor)       truncation psi (``1`` = no truncation); feed
                                              ``np.array(0.7, np.float32)``, not a Python float
``img``   float32 ``[N, C, H, W]`` (NCHW)     the generator output, nominally in ``[-1, 1]``
========  ==================================  =======================================================

Opset: :data:`DEFAULT_OPSET` = 18 (ONNX 1.13, 2022), the oldest opset jax2onnx 0.17 exports this graph
correctly for: it writes ``ReduceMean`` in its opset-18 form (axes as an input) even when asked for 17, which
``onnx.checker`` rejects. 18 keeps the widest runtime support (onnxruntime >= 1.14, TensorRT >= 8.6,
OpenVINO >= 2023.0, onnxruntime-web); ``--opset 19..23`` gives the same numbers. Operators used: ``Conv``
(grouped, for the FIR filters), ``Pad`` (negative pads crop), ``MatMul``/``Einsum``, ``LeakyRelu``, ``Where``
(truncation cutoff), ``Sin``, ``Clip`` and elementwise/shape ops. The IR version is lowered to the minimum
the opset allows (8 for opset 18; jax2onnx writes 10, which onnxruntime < 1.16 refuses).

The model's ``metadata_props`` hold ``z_dim``, ``c_dim``, ``w_dim``, ``img_resolution``, ``img_channels``,
``num_ws``, ``truncation_cutoff``, ``generator_config`` (the JSON of :func:`stylegan_jax.models.generator_config`,
enough to rebuild the architecture), ``stylegan_jax_version``, ``jax2onnx_version``, ``opset``, ``impl``,
``inputs`` (comma-separated input names) and, for StyleGAN2, ``noise_mode`` (``'const'``); :func:`read_metadata`
returns them decoded.

Two things in jax2onnx (0.17) are worked around here, inside :func:`_jax2onnx_patches` (scoped to the export
and undone afterwards; nothing in ``stylegan_jax.ops`` had to change):

* its ``lax.pad`` lowering raises ``NotImplementedError`` for interior padding (the zero insertion of the
  reference ``upfirdn2d``) and crashes (``InconclusiveDimensionOperation: Symbolic dimension 'N' used in a
  context that requires a constant``) on any pad of a tensor with a symbolic batch dimension, because it
  builds ``ir.Shape(out_aval.shape)`` from the symbolic JAX dims. :class:`_PadPlugin` replaces it (plugin
  mechanism: ``PLUGIN_REGISTRY['pad']``): interior padding becomes Unsqueeze -> Pad -> Reshape -> Slice,
  edge padding one ``Pad``, and shapes are stamped through jax2onnx's symbolic-dim helper;
* its per-equation "is the output connected to the graph" check scans every node built so far, i.e. is
  quadratic in the graph size (about 70% of a 3 min export of the fast-path generator on 2 cores). The check
  is replaced by an O(1) one (a value with a producer node is connected) that falls back to the original for
  producer-less values (inputs, initializers). Graph validity is checked afterwards by ``onnx.checker``.

After conversion, two graph clean-ups: ``Where(x >= 0, x, x * a)`` (the leaky ReLU as ``bias_act`` writes it)
becomes ``LeakyRelu(x, alpha=a)`` (bit-exact; ~15% of onnxruntime's CPU time went to those triples), and the
initializers no node reads are dropped (onnxruntime otherwise warns about them on every load).

Implementation choice: the export traces the generator with ``impl="ref"`` by default (``upfirdn2d`` as
zero insertion + one grouped ``Conv`` per axis) rather than the default ``"fast"`` polyphase path (a
``Slice``/``Mul``/``Add`` per filter tap): about 3x fewer ONNX nodes and a 3x faster export, and both compute
the same function (max difference ~1e-7 on the parity fixtures). ``impl="fast"`` is available. StyleGAN2 has no
such switch (its resampling always takes the polyphase path); ``impl`` is ignored for it and recorded as
``"fast"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.models import generator_config
from stylegan_jax.networks.stylegan2 import StyleGAN2Generator
from stylegan_jax.networks.stylegan3 import Generator

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "add_arguments",
    "command",
    "export_generator",
    "read_metadata",
    "verify_export",
]

DEFAULT_OPSET = 18
# jax2onnx 0.17 writes opset-18 ReduceMean (axes as an input) whatever opset it is asked for, so 17 and below
# give graphs onnx.checker rejects; 18..23 were tested to give the same numbers.
MIN_OPSET, MAX_OPSET = 18, 23
INPUT_Z, INPUT_C, INPUT_PSI, OUTPUT_IMG = "z", "c", "psi", "img"
# ONNX protobufs cannot exceed 2 GiB; larger models go to an external-data sidecar next to the .onnx.
_PROTO_LIMIT = 2**31 - 2**20
# StyleGAN2 noise inputs in the graph: the stored noise images (deterministic, no rng input needed).
STYLEGAN2_NOISE_MODE = "const"


class ExportError(RuntimeError):
    """The generator could not be exported (conversion failure, invalid graph, or a wrong argument)."""


def package_version() -> str:
    try:
        return _importlib_metadata.version("stylegan-jax")
    except _importlib_metadata.PackageNotFoundError:
        return "unknown"


def _jax2onnx_version() -> str:
    try:
        return _importlib_metadata.version("jax2onnx")
    except _importlib_metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------------------------------
# jax2onnx plugin for lax.pad and the connectivity-check speed-up.


def _make_pad_plugin() -> Any:
    """Build the replacement ``lax.pad`` lowering (imports jax2onnx lazily: it is an optional dependency)."""
    import onnx_ir as ir
    from jax2onnx.plugins._ir_shapes import _ensure_value_metadata, _stamp_type_and_shape
    from jax2onnx.plugins.plugin_system import PrimitiveLeafPlugin

    def static_dim(d: Any) -> int | None:
        try:
            return int(d)
        except Exception:  # symbolic jax dimension (the dynamic batch)
            return None

    class _PadPlugin(PrimitiveLeafPlugin):
        """``lax.pad`` -> ONNX, with interior padding and symbolic (batch) dimensions."""

        def lower(self, ctx: Any, eqn: Any) -> None:
            x_var, cval_var = eqn.invars[:2]
            out_var = eqn.outvars[0]
            config = [(int(lo), int(hi), int(it)) for lo, hi, it in eqn.params["padding_config"]]
            b = ctx.builder
            x = ctx.get_value_for_var(x_var, name_hint=ctx.fresh_name("pad_data"))
            cval = ctx.get_value_for_var(cval_var, name_hint=ctx.fresh_name("pad_cval"),
                                         prefer_np_dtype=np.dtype(x_var.aval.dtype))
            shape = list(x_var.aval.shape)
            rank = len(shape)
            dtype = x.dtype or ir.DataType.from_numpy(np.dtype(x_var.aval.dtype))

            def stamp(v: Any, dims: tuple) -> None:
                # Builder ops come out untyped; without a type onnx_ir drops their value_info (and warns).
                v.type = ir.TensorType(dtype)
                _stamp_type_and_shape(v, dims)

            def const(values: list[int], hint: str) -> Any:
                return b.const_i64(ctx.fresh_name(hint), [int(v) for v in values])

            # JAX applies interior padding first, then the (possibly negative) edge padding.
            for ax, (_, _, interior) in enumerate(config):
                if interior == 0:
                    continue
                n = static_dim(shape[ax])
                later = [static_dim(d) for d in shape[ax + 1:]]
                if n is None or sum(d is None for d in later) > 1:
                    raise NotImplementedError(
                        f"lax.pad: interior padding along axis {ax} of shape {tuple(shape)} needs a static axis "
                        "and at most one dynamic axis after it")
                if n == 0:
                    continue
                # [.., n, ..] -> [.., n, 1, ..] -> pad the new axis to interior+1 -> merge -> drop the tail zeros.
                u = b.Unsqueeze(x, const([ax + 1], "pad_axis"), _outputs=[ctx.fresh_name("pad_unsq")])
                stamp(u, tuple(shape[:ax + 1] + [1] + shape[ax + 1:]))
                pads = [0] * (2 * (rank + 1))
                pads[rank + 1 + ax + 1] = interior
                p = b.Pad(u, const(pads, "pad_pads"), cval, mode="constant", _outputs=[ctx.fresh_name("pad_int")])
                stamp(p, tuple(shape[:ax + 1] + [interior + 1] + shape[ax + 1:]))
                # Reshape target: 0 copies the (possibly dynamic) leading dims, -1 takes a dynamic trailing one.
                target = [0] * ax + [n * (interior + 1)] + [-1 if d is None else d for d in later]
                r = b.Reshape(p, const(target, "pad_shape"), _outputs=[ctx.fresh_name("pad_merge")])
                stamp(r, tuple(shape[:ax] + [n * (interior + 1)] + shape[ax + 1:]))
                shape[ax] = n + (n - 1) * interior
                x = b.Slice(r, const([0], "pad_start"), const([shape[ax]], "pad_end"), const([ax], "pad_axes"),
                            _outputs=[ctx.fresh_name("pad_trim")])
                stamp(x, tuple(shape))

            out_spec = ctx.get_value_for_var(out_var, name_hint=ctx.fresh_name("pad_out"))
            name = getattr(out_spec, "name", None) or ctx.fresh_name("Pad")
            producer = getattr(out_spec, "producer", lambda: None)
            if callable(producer) and producer() is not None:
                name = ctx.fresh_name("Pad")
            edges = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
            if any(edges):
                result = b.Pad(x, const(edges, "pad_pads"), cval, mode="constant", _outputs=[name])
            else:
                result = b.Identity(x, _outputs=[name])
            stamp(result, tuple(out_var.aval.shape))
            _ensure_value_metadata(ctx, result)
            ctx.bind_value_for_var(out_var, result)

    return _PadPlugin


@contextlib.contextmanager
def _jax2onnx_patches() -> Iterator[None]:
    """Install the ``lax.pad`` plugin and the O(1) connectivity check for the duration of one export."""
    import jax.lax
    from jax2onnx.converter import output_binding
    from jax2onnx.plugins.plugin_system import PLUGIN_REGISTRY, import_all_plugins

    import_all_plugins()  # populate the registry first, so that it does not re-register the stock plugin later
    prim = jax.lax.pad_p.name
    old_plugin = PLUGIN_REGISTRY.get(prim)
    plugin = _make_pad_plugin()()
    plugin.primitive = prim
    plugin.metadata = dict(getattr(old_plugin, "metadata", None) or {"jaxpr_primitive": prim})
    # The speed-up targets a private jax2onnx function (tested with 0.17.1): skipped if a release renames it.
    old_connected = getattr(output_binding, "_value_is_graph_connected", None)

    def connected(ctx: Any, value: Any) -> bool:
        # Values made by builder ops carry their producer node; only graph inputs and initializers need the scan.
        return value.producer() is not None or old_connected(ctx, value)

    # onnx_ir warns once per intermediate value jax2onnx left untyped (hundreds per export); such values only
    # lose their optional value_info, and onnx.checker's full check re-infers every shape afterwards.
    serde_logger = logging.getLogger("onnx_ir.serde")
    old_level = serde_logger.level
    PLUGIN_REGISTRY[prim] = plugin
    if old_connected is not None:
        output_binding._value_is_graph_connected = connected
    serde_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        serde_logger.setLevel(old_level)
        if old_connected is not None:
            output_binding._value_is_graph_connected = old_connected
        if old_plugin is None:
            PLUGIN_REGISTRY.pop(prim, None)
        else:
            PLUGIN_REGISTRY[prim] = old_plugin


# ---------------------------------------------------------------------------------------------------------------------
# Export.


def _with_impl(G: Generator | StyleGAN2Generator, impl: str) -> Generator | StyleGAN2Generator:
    if impl not in ("ref", "fast"):
        raise ExportError(f"impl must be 'ref' or 'fast', got {impl!r}")
    if isinstance(G, StyleGAN2Generator):
        return G  # no impl switch: its ops always take one path
    return G.clone(synthesis_kwargs={**dict(G.synthesis_kwargs or {}), "impl": impl}, parent=None)


def _call_kwargs(G: Generator | StyleGAN2Generator) -> dict[str, Any]:
    """Extra ``G.apply`` kwargs of the exported forward pass (StyleGAN2's noise would otherwise need an rng)."""
    return {"noise_mode": STYLEGAN2_NOISE_MODE} if isinstance(G, StyleGAN2Generator) else {}


def _forward(G: Generator | StyleGAN2Generator, variables: Mapping[str, Any], with_labels: bool,
             truncation_cutoff: int | None):
    kw = _call_kwargs(G)
    if with_labels:
        def fn(z, c, psi):
            return G.apply(variables, z, c, psi, truncation_cutoff, **kw)
    else:
        def fn(z, psi):
            return G.apply(variables, z, None, psi, truncation_cutoff, **kw)
    return fn


def export_generator(
    G: Generator | StyleGAN2Generator,
    variables: Mapping[str, Any],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    with_labels: bool | None = None,
    *,
    truncation_cutoff: int | None = None,
    impl: str = "ref",
    check: bool = True,
) -> Path:
    """Export ``G`` with ``variables`` to an ONNX file; returns its path.

    Args:
      G, variables: the generator (StyleGAN3, or StyleGAN2 with its noise baked in as ``noise_mode='const'``) and
        its ``{'params', 'ema', 'buffers'}`` (e.g. from :func:`stylegan_jax.checkpoint.load_generator`). The
        weights become graph initializers.
      path: the ``.onnx`` file to write (parent directories are created).
      opset: ONNX opset, 18..23 (default :data:`DEFAULT_OPSET` = 18).
      with_labels: add the ``c`` input. ``None`` (default) = exactly when ``G.c_dim > 0``; asking for labels on
        an unconditional model, or for none on a conditional one, raises :class:`ExportError`.
      truncation_cutoff: truncate only the first ``cutoff`` ws (baked into the graph; ``None`` = all).
      impl: ``upfirdn2d`` implementation traced into the graph, ``"ref"`` (default) or ``"fast"`` (StyleGAN3
        only; StyleGAN2 always traces its one path).
      check: run ``onnx.checker.check_model`` (full check, with shape inference) on the result.

    Raises:
      ExportError: with the reason (and, for a jax2onnx failure, the primitive it reported).
    """
    try:
        import onnx
        from jax2onnx import to_onnx
    except ImportError as e:
        raise ExportError(f"ONNX export needs jax2onnx and onnx ({e}): pip install 'stylegan-jax[onnx]'") from e

    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    c_dim = int(G.c_dim)
    labels = c_dim > 0 if with_labels is None else bool(with_labels)
    if labels and c_dim == 0:
        raise ExportError("with_labels=True but the generator is unconditional (c_dim = 0)")
    if not labels and c_dim > 0:
        raise ExportError(f"the generator is conditional (c_dim = {c_dim}): it cannot be exported without labels")
    stylegan2 = isinstance(G, StyleGAN2Generator)
    # A StyleGAN2 generator without noise inputs (use_noise=False) has no buffers.
    for collection in ("params", "ema") if stylegan2 else ("params", "ema", "buffers"):
        if collection not in variables:
            raise ExportError(f"variables lack the {collection!r} collection (have {sorted(variables)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    G_export = _with_impl(G, impl)
    variables = jax.tree.map(jnp.asarray, dict(variables))
    fn = _forward(G_export, variables, labels, truncation_cutoff)
    specs = [jax.ShapeDtypeStruct(("N", G.z_dim), jnp.float32)]
    names = [INPUT_Z]
    if labels:
        specs.append(jax.ShapeDtypeStruct(("N", c_dim), jnp.float32))
        names.append(INPUT_C)
    specs.append(jax.ShapeDtypeStruct((), jnp.float32))
    names.append(INPUT_PSI)

    try:
        with _jax2onnx_patches():
            model = to_onnx(fn, specs, model_name="stylegan2_generator" if stylegan2 else "stylegan3_generator",
                            opset=int(opset), input_names=names, output_names=[OUTPUT_IMG])
    except NotImplementedError as e:
        raise ExportError(f"jax2onnx cannot lower a primitive of the generator: {e}") from e
    except Exception as e:
        raise ExportError(f"jax2onnx failed to export the generator ({type(e).__name__}: {e})") from e

    _fuse_leaky_relu(model.graph)
    _drop_unused_initializers(model.graph)
    # jax2onnx stamps the newest IR version its onnx knows (10 at opset 18); the lowest one the opsets allow
    # lets older runtimes load the file (IR 10 needs onnxruntime >= 1.16; opset 18 only needs IR 8).
    model.ir_version = min(model.ir_version, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    meta = {
        "z_dim": G.z_dim, "c_dim": c_dim, "w_dim": G.w_dim, "img_resolution": G.img_resolution,
        "img_channels": G.img_channels, "num_ws": G.num_ws,
        "truncation_cutoff": "" if truncation_cutoff is None else int(truncation_cutoff),
        "generator_config": json.dumps(generator_config(G), sort_keys=True),
        "stylegan_jax_version": package_version(), "jax2onnx_version": _jax2onnx_version(),
        "opset": int(opset), "impl": "fast" if stylegan2 else impl, "inputs": ",".join(names),
    }
    if stylegan2:
        meta["noise_mode"] = STYLEGAN2_NOISE_MODE
    onnx.helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    model.doc_string = (("StyleGAN2 generator (noise_mode const)" if stylegan2 else "StyleGAN3 generator")
                        + " exported by stylegan_jax: inputs " + ", ".join(names)
                        + f"; output {OUTPUT_IMG} float32 NCHW in about [-1, 1]")
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            raise ExportError(f"the exported graph fails onnx.checker: {e}") from e
    large = model.ByteSize() > _PROTO_LIMIT
    onnx.save_model(model, str(path), save_as_external_data=large,
                    location=path.name + ".data" if large else None)
    return path


def _scalar_constant(graph_consts: dict[str, np.ndarray], name: str) -> float | None:
    value = graph_consts.get(name)
    if value is None or value.size != 1 or value.dtype.kind != "f":
        return None
    return float(value.reshape(()))


def _fuse_leaky_relu(graph: Any) -> int:
    """Rewrite ``Where(x >= 0, x, x * a)`` (how ``bias_act`` writes the leaky ReLU) into ``LeakyRelu(x, alpha=a)``.

    Bit-exact (both compute ``a * x`` in float32 for ``x < 0`` and pass ``x`` through otherwise, NaN included)
    and one kernel instead of three plus a boolean tensor: onnxruntime spent ~15% of a forward pass in these
    ``Where``/``GreaterOrEqual``/``Mul`` triples. Returns the number of rewrites.
    """
    import onnx
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    dead: set[tuple[str, ...]] = set()  # nodes by their (unique, SSA) output names
    count = 0
    for idx, node in enumerate(graph.node):
        if node.op_type != "Where" or len(node.input) != 3:
            continue
        cond, x, y = node.input
        ge, mul = producer.get(cond), producer.get(y)
        if ge is None or mul is None or ge.op_type != "GreaterOrEqual" or mul.op_type != "Mul":
            continue
        if ge.input[0] != x or _scalar_constant(consts, ge.input[1]) != 0.0:
            continue
        other = [i for i in mul.input if i != x]
        if len(mul.input) != 2 or len(other) != 1 or (alpha := _scalar_constant(consts, other[0])) is None:
            continue
        fused = onnx.helper.make_node("LeakyRelu", [x], list(node.output), name=f"{node.name or 'where'}_leakyrelu",
                                      alpha=alpha)
        graph.node[idx].CopyFrom(fused)  # same position: x is already computed, order stays topological
        count += 1
        for helper_node in (ge, mul):
            if all(consumers.get(o, 0) <= 1 and o not in graph_outputs for o in helper_node.output):
                dead.add(tuple(helper_node.output))
    if dead:
        keep = [n for n in graph.node if tuple(n.output) not in dead]
        del graph.node[:]
        graph.node.extend(keep)
    return count


def _drop_unused_initializers(graph: Any) -> None:
    """Remove initializers no node reads (jax2onnx 0.17 leaves a few shape constants behind, which onnxruntime
    reports with a warning on every load)."""
    used: set[str] = set()

    def collect(g: Any) -> None:
        for node in g.node:
            used.update(node.input)
            for attr in node.attribute:  # control-flow subgraphs read outer-scope names too
                for sub in [attr.g, *attr.graphs] if attr.HasField("g") or attr.graphs else []:
                    collect(sub)
        used.update(o.name for o in g.output)

    collect(graph)
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata_props`` of an exported model, decoded (ints as ints, ``generator_config`` as a dict)."""
    import onnx

    from stylegan_jax.apis.inference import decode_metadata

    model = onnx.load_model(str(path), load_external_data=False)
    return decode_metadata({p.key: p.value for p in model.metadata_props})


def verify_export(
    G: Generator | StyleGAN2Generator,
    variables: Mapping[str, Any],
    path: str | Path,
    batch_sizes: tuple[int, ...] = (1, 3),
    psi: float = 0.7,
    seed: int = 0,
    truncation_cutoff: int | None = None,
) -> float:
    """Max absolute difference between onnxruntime (CPU) on ``path`` and the JAX forward pass of ``G``.

    Random z (and one-hot c) for each batch size; ``psi`` is fed through the model's input.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    kw = _call_kwargs(G)
    forward = jax.jit(lambda v, z, c, psi: G.apply(v, z, c, psi, truncation_cutoff, **kw))
    rng = np.random.RandomState(seed)
    worst = 0.0
    for n in batch_sizes:
        z = rng.randn(n, G.z_dim).astype(np.float32)
        c = np.eye(G.c_dim, dtype=np.float32)[rng.randint(0, G.c_dim, n)] if G.c_dim else None
        feed = {INPUT_Z: z, INPUT_PSI: np.asarray(psi, np.float32)}
        if INPUT_C in names:
            feed[INPUT_C] = c
        got = session.run([OUTPUT_IMG], feed)[0]
        want = np.asarray(forward(variables, z, c, jnp.float32(psi)))
        worst = max(worst, float(np.max(np.abs(got - want))))
    return worst


# ---------------------------------------------------------------------------------------------------------------------
# CLI: stylegan-jax export --ckpt PATH --out g.onnx [--opset N]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint directory (workdir, checkpoints dir or one step)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--which", choices=["G_ema", "G"], default="G_ema", help="generator weights to export")
    parser.add_argument("--truncation-cutoff", type=int, default=None,
                        help="truncate only the first N ws (default: all)")
    parser.add_argument("--impl", choices=["ref", "fast"], default="ref",
                        help="upfirdn2d implementation traced into the graph (default ref: smaller graph); StyleGAN3 "
                             "only, StyleGAN2 has one path")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnxruntime-vs-JAX comparison after export")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs difference accepted by the verification")


def command(args: argparse.Namespace) -> int:
    from stylegan_jax.checkpoint import CheckpointError, load_generator

    try:
        G, variables = load_generator(args.ckpt, step=args.step, which=args.which)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = export_generator(G, variables, args.out, opset=args.opset, truncation_cutoff=args.truncation_cutoff,
                               impl=args.impl)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} (opset {args.opset}, {out.stat().st_size / 2**20:.1f} MiB, "
          f"{time.perf_counter() - t0:.1f} s)")
    if not args.no_verify:
        err = verify_export(G, variables, out, truncation_cutoff=args.truncation_cutoff)
        print(f"onnxruntime vs JAX: max abs difference {err:.3g} (tolerance {args.atol:g})")
        if not err <= args.atol:
            print("error: the exported model does not match the JAX generator", file=sys.stderr)
            return 1
    return 0
