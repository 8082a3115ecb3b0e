"""What a train step becomes on an accelerator, checked on a CPU-only host with `jax.export`.

`jax.export` lowers a jitted function for platforms this host does not have ('cuda', 'tpu'). The
StableHLO it produces is what an accelerator host would compile, so the properties a GPU or TPU
run depends on can be read from it here (issue 31):

- custom calls: only the accelerators' own library targets (cuSOLVER / cuBLAS FFI, the TPU
  linear-algebra calls) and sharding markers; nothing CPU-only (our CPU convolution kernel,
  LAPACK) and no host callback;
- no infeed, outfeed, send or recv: nothing leaves the device inside the step;
- convolutions in the model's compute dtype, and the heads' matmuls on backbone features too;
- params, optimiser state and BatchNorm statistics stored in float32, the metrics in float32;
- every state leaf donated (an input-output alias), so the step updates the state in place.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export

from ssl_jax import export as export_lib
from ssl_jax import models
from ssl_jax import sharding as sharding_lib
from ssl_jax import train

PLATFORMS = ("cuda", "tpu")
# Custom-call targets an accelerator build of XLA provides: jax's GPU linear algebra (cuSOLVER,
# cuBLAS, hipSOLVER FFI), the TPU linear-algebra calls, and the partitioner's sharding markers.
_ACCELERATOR_TARGET = re.compile(
    r"^(cu|hip)\w+$|^(Qr|Eigh|ProductOfElementaryHouseholderReflectors|LuDecomposition|"
    r"Sharding|SPMDFullToShardShape|SPMDShardToFullShape)$")
_HOST_TRANSFER_OPS = ("stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send",
                      "stablehlo.recv")
_DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64"}


@dataclasses.dataclass(frozen=True)
class LoweringReport:
  """What the lowered step holds (see the module docstring)."""
  platforms: tuple[str, ...]
  custom_call_targets: frozenset[str]
  host_transfers: tuple[str, ...]
  convolution_dtypes: frozenset[str]        # result dtypes of every convolution
  feature_matmul_dtypes: frozenset[str]     # result dtypes of matmuls contracting the features
  state_float_dtypes: frozenset[str]        # dtypes of the floating state leaves (in_avals)
  metric_dtypes: frozenset[str]             # dtypes of the step's metric outputs
  state_leaves: int
  donated_leaves: int

  def problems(self, compute_dtype: str) -> list[str]:
    """What an accelerator run of this step would get wrong (empty when nothing)."""
    found = []
    foreign = sorted(t for t in self.custom_call_targets if not _ACCELERATOR_TARGET.match(t))
    if foreign:
      found.append(f"custom calls an accelerator does not provide: {foreign}")
    if self.host_transfers:
      found.append(f"host transfers inside the step: {sorted(set(self.host_transfers))}")
    if self.convolution_dtypes != {compute_dtype}:
      found.append(f"convolutions in {sorted(self.convolution_dtypes)}, not {compute_dtype}")
    if self.feature_matmul_dtypes != {compute_dtype}:
      found.append(f"head matmuls on the features in {sorted(self.feature_matmul_dtypes)}, "
                   f"not {compute_dtype}")
    if self.state_float_dtypes != {"float32"}:
      found.append(f"state stored in {sorted(self.state_float_dtypes)}, not float32")
    if self.metric_dtypes != {"float32"}:
      found.append(f"metrics in {sorted(self.metric_dtypes)}, not float32")
    if self.donated_leaves != self.state_leaves:
      found.append(f"{self.donated_leaves} of {self.state_leaves} state leaves donated")
    return found


def export_train_step(config: ml_collections.ConfigDict, platforms=PLATFORMS, devices=None
                      ) -> tuple[jax_export.Exported, object]:
  """(the train step of `config` exported for `platforms`, its abstract sharded state). A
  `model.conv_impl` of 'auto' is lowered as an accelerator host resolves it: the plain XLA
  convolution (`models.resolve_conv_impl`)."""
  if config.model.conv_impl == "auto":
    config = config.copy_and_resolve_references()
    config.model.conv_impl = "xla"
  experiment = train.Experiment(config, devices=devices)
  shardings = sharding_lib.state_shardings(experiment.abstract_state, experiment.mesh,
                                           config.mesh.fsdp_min_size)
  abstract_state = experiment.abstract_sharded_state()
  batch_sharding = sharding_lib.batch_sharding(experiment.mesh)
  image_shape = (config.batch_size, *experiment.image_shape)
  batch = {view: jax.ShapeDtypeStruct(image_shape, jnp.uint8, sharding=batch_sharding)
           for view in ("view1", "view2")}
  batch["label"] = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32,
                                        sharding=batch_sharding)
  step = experiment.jitted_train_step(shardings)
  return jax_export.export(step, platforms=platforms)(abstract_state, batch), abstract_state


def _result_dtypes(text: str, op: str) -> list[str]:
  return [_DTYPE_NAMES.get(dtype, dtype) for dtype in
          re.findall(rf"stablehlo\.{op}\b[^\n]*-> tensor<(?:\d+x)*([a-z]\w*)>", text)]


def _custom_calls_and_transfers(text: str) -> dict:
  return dict(custom_call_targets=frozenset(re.findall(r"custom_call @([\w.]+)", text)),
              host_transfers=tuple(op for op in _HOST_TRANSFER_OPS
                                   if f"{op} " in text or f"{op}(" in text))


def report(exported: jax_export.Exported, abstract_state,
           model_config: ml_collections.ConfigDict) -> LoweringReport:
  """The report of a train step exported by `export_train_step`."""
  text = exported.mlir_module()
  features = models.feature_dim(model_config.name, model_config.width)
  # Matmuls whose first operand's last axis is the pooled features: the heads' first layers.
  feature_matmuls = re.findall(
      rf"stablehlo\.dot_general [^\n]*contracting_dims = \[1\] x \[0\] : "
      rf"\(tensor<\d+x{features}x(\w+)>, tensor<{features}x\d+x\w+>\) -> tensor<\d+x\d+x(\w+)>",
      text)
  state_count = len(jax.tree.leaves(abstract_state))
  state_avals = exported.in_avals[:state_count]
  metric_avals = exported.out_avals[state_count:]
  return LoweringReport(
      platforms=tuple(exported.platforms),
      **_custom_calls_and_transfers(text),
      convolution_dtypes=frozenset(_result_dtypes(text, "convolution")),
      feature_matmul_dtypes=frozenset(_DTYPE_NAMES.get(out, out) for _, out in feature_matmuls),
      state_float_dtypes=frozenset(str(aval.dtype) for aval in state_avals
                                   if jnp.issubdtype(aval.dtype, jnp.floating)),
      metric_dtypes=frozenset(str(aval.dtype) for aval in metric_avals
                              if jnp.issubdtype(aval.dtype, jnp.floating)),
      state_leaves=state_count,
      donated_leaves=text.count("tf.aliasing_output"),
  )


def encoder_forward_report(model_config: ml_collections.ConfigDict, image_size: int,
                           batch_size: int, platforms=PLATFORMS) -> LoweringReport:
  """The report of `load_encoder`'s forward (`Encoder.apply_unjitted` under jit) for a model of
  `model_config`, exported for `platforms` (no state: nothing is donated or stored)."""
  module = models.build_backbone(model_config)
  images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8)
  variables = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
  encoder = export_lib.Encoder(model_config, variables, image_size, (0.5,) * 3, (0.25,) * 3, {})
  exported = jax_export.export(jax.jit(encoder.apply_unjitted), platforms=platforms)(
      variables, images)
  text = exported.mlir_module()
  return LoweringReport(
      platforms=tuple(exported.platforms),
      **_custom_calls_and_transfers(text),
      convolution_dtypes=frozenset(_result_dtypes(text, "convolution")),
      feature_matmul_dtypes=frozenset(), state_float_dtypes=frozenset(),
      metric_dtypes=frozenset(), state_leaves=0, donated_leaves=0)
