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

The conversion goes through jax2onnx's public API only (``jax2onnx.to_onnx``; tested with jax2onnx 0.17.1, pinned
``>=0.17.1,<0.18`` in the ``onnx`` extra), with its stock lowerings: nothing of jax2onnx is patched or
re-registered. The one construct it cannot lower, ``lax.pad`` with interior padding (and negative padding on a
dynamic batch), is not in the traced graph: the reference ``upfirdn2d`` writes its zero insertion as
stack/reshape and its crops as slices (the same numbers, bit for bit). Conversions are serialized by a module
lock, because jax2onnx swaps framework call sites for tracing shims while one runs: exports from several threads
are correct, one after the other.

After conversion, two graph clean-ups: ``Where(x >= 0, x, x * a)`` (the leaky ReLU as ``bias_act`` writes it)
becomes ``LeakyRelu(x, alpha=a)`` (bit-exact; ~15% of onnxruntime's CPU time went to those triples), and the
initializers no node reads are dropped (onnxruntime otherwise warns about them on every load).

Implementation choice: the export traces the generator with ``impl="ref"`` by default (``upfirdn2d`` as
zero insertion + one grouped ``Conv`` per axis) rather than the default ``"fast"`` path (``ops.upfirdn2d.fir_axis``:
one strided slice, scale and add per filter tap per axis: ~3x more ONNX nodes); both compute the same function
(max difference ~1e-7 on the parity fixtures). ``impl="fast"`` is available. StyleGAN2 has no
such switch (its resampling always takes the fast path); ``impl`` is ignored for it and recorded as
``"fast"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata as _importlib_metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stylegan_jax.models import generator_config

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
# jax2onnx: public API only (``jax2onnx.to_onnx``), one conversion at a time.

# A jax2onnx conversion swaps framework call sites for tracing shims while it runs (reference-counted, not locked)
# and imports its plugins on first use; conversions in several threads of one process are serialized here.
_CONVERT_LOCK = threading.Lock()


class _UntypedValueFilter(logging.Filter):
    """Drops onnx_ir's "value type ... is not known ... Skipping serialization" warnings: jax2onnx leaves some
    intermediate values untyped (hundreds per export); they only lose their optional value_info, and
    ``onnx.checker``'s full check re-infers every shape afterwards. Installed once, at import."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not known" not in record.getMessage()


logging.getLogger("onnx_ir.serde").addFilter(_UntypedValueFilter())


# ---------------------------------------------------------------------------------------------------------------------
# Export.


def _with_impl(G: Any, impl: str) -> Any:
    if impl not in ("ref", "fast"):
        raise ExportError(f"impl must be 'ref' or 'fast', got {impl!r}")
    return G.with_impl(impl)  # generators whose ops have one path return themselves


def _call_kwargs(G: Any) -> dict[str, Any]:
    """Extra ``G.apply`` kwargs of the exported forward pass (StyleGAN2's noise would otherwise need an rng)."""
    return {"noise_mode": STYLEGAN2_NOISE_MODE} if G.has_noise_inputs else {}


def _forward(G: Any, variables: Mapping[str, Any], with_labels: bool,
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
    G: Any,
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
    for collection in G.variable_collections:
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
        with _CONVERT_LOCK:
            model = to_onnx(fn, specs, model_name=G.config_class.replace(".", "_").lower(),
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
        "opset": int(opset), "impl": impl, "inputs": ",".join(names),
    }
    if G.has_noise_inputs:
        meta["noise_mode"] = STYLEGAN2_NOISE_MODE
    onnx.helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    kind = f"{G.config_class} (noise_mode {STYLEGAN2_NOISE_MODE})" if G.has_noise_inputs else G.config_class
    model.doc_string = (kind
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
    G: Any,
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
