"""`train_and_evaluate(config, workdir)`: pretrain, checkpoint, export, evaluate, summarise.

The same call resumes from the latest committed checkpoint in `workdir`. The loop does host work
only at log, evaluation and checkpoint steps; in between it just feeds batches to the jitted step.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

import jax
import ml_collections

from input_pipeline import pipeline as input_pipeline
from input_pipeline import sources as input_sources
from ssl_jax import checkpointing
from ssl_jax import config_validation
from ssl_jax import distributed
from ssl_jax import ema as ema_lib
from ssl_jax import export as export_lib
from ssl_jax import metric_writers
from ssl_jax import monitoring
from ssl_jax import optim
from ssl_jax import preemption
from ssl_jax import quick_compile
from ssl_jax import run_records
from ssl_jax import sharding as sharding_lib
from ssl_jax import step as step_lib
from ssl_jax import train_state as train_state_lib
from ssl_jax import workdir_config
from ssl_jax import workdir_owner
from ssl_jax.evaluation import results_files
from ssl_jax.evaluation import runner
from ssl_jax.evaluation.data import EvalData, capped_note
from ssl_jax.evaluation.evaluators import EVALUATORS
from ssl_jax.objectives import build_objective

ENCODER_DIR = "encoder"
EVAL_DIR = "eval"
CHECKPOINT_DIR = "checkpoints"
SUMMARY_FILE = run_records.SUMMARY_FILE
# The label names of file-based datasets, one a line in label order (usable as data.class_list).
CLASSES_FILE = "classes.txt"


class Preempted(RuntimeError):
  """Training stopped early (a preemption notice or `stop_at_step`) after saving a checkpoint."""

  def __init__(self, step: int):
    super().__init__(f"stopped at step {step} after saving a checkpoint; run the same command "
                     "again to resume")
    self.step = step


class NonFiniteTraining(RuntimeError):
  """Too many consecutive steps had a non-finite loss or gradient."""


class Experiment:
  """A config made concrete: mesh, objective, schedules, optimiser and the pure init and step.

  Everything here is built and checked before any device work (shape errors surface through
  `jax.eval_shape`). `train_and_evaluate` drives it; tests use it to run steps on chosen devices.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None, *,
               devices=None):
    self.config = config
    self.workdir = None if workdir is None else config_validation.prepare_workdir(workdir)
    devices = list(jax.devices() if devices is None else devices)
    config_validation.validate_config(config, num_devices=len(devices),
                                      process_count=jax.process_count())
    distributed.assert_same_config_everywhere(config)
    self.mesh = sharding_lib.make_mesh(config.mesh, devices)
    self.objective = build_objective(config, sharding_lib.num_batch_shards(self.mesh))

    self.global_batch = config.batch_size
    dataset_size = input_pipeline.train_dataset_size(config)
    self.steps_per_epoch = dataset_size // self.global_batch
    if self.steps_per_epoch == 0:
      raise config_validation.ConfigError(
          f"config.batch_size={self.global_batch} is larger than the {dataset_size} training "
          f"examples of {config.data.name}")
    self.total_steps = (config.num_steps if config.num_steps > 0
                        else int(config.num_epochs * self.steps_per_epoch))
    self.image_shape = (config.data.image_size, config.data.image_size, 3)
    self.compiler_options = quick_compile.compiler_options(config.quick_compile)

    # Initialisation draws with the 'rbg' generator: the same initialiser maths, but XLA compiles
    # it about 10x faster on CPU than threefry (one threefry kernel per parameter shape). Step
    # keys stay threefry, whose values do not depend on how the batch is sharded.
    self.init_rng = jax.random.key(config.seed, impl="rbg")
    self.step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
    abstract_params, _ = jax.eval_shape(
        functools.partial(self.objective.init, image_shape=self.image_shape), self.init_rng)
    self.optimizer, self.lr_schedule = optim.build_optimizer(
        config.optim, self.total_steps, self.steps_per_epoch, self.global_batch,
        self.objective.param_labels(abstract_params))
    self.tau_schedule = ema_lib.tau_schedule(config.ema, self.total_steps)
    self.init_fn = train_state_lib.make_init_fn(self.objective, self.optimizer, self.image_shape,
                                                self.global_batch)
    # Abstract evaluation runs every shape/divisibility check (e.g. the MoCo queue) before any
    # device work.
    self.abstract_state = jax.eval_shape(self.init_fn, self.init_rng)

  def initial_state(self):
    """(state at step 0, state shardings), placed on the mesh by one jitted init."""
    return train_state_lib.create_train_state(self.init_fn, self.init_rng, self.mesh,
                                              self.config.mesh.fsdp_min_size,
                                              self.compiler_options)

  def abstract_sharded_state(self):
    """The state's shapes with the shardings the rule gives them (what checkpoints restore to)."""
    shardings = sharding_lib.state_shardings(self.abstract_state, self.mesh,
                                             self.config.mesh.fsdp_min_size)
    return checkpointing.abstract_like(self.abstract_state, shardings)

  def _train_step(self):
    train_step, _ = step_lib.make_train_step(
        self.objective, self.optimizer, self.lr_schedule, self.tau_schedule, self.config.augment,
        tuple(self.config.data.mean), tuple(self.config.data.std), self.step_rng)
    return train_step

  def jitted_train_step(self, state_shardings):
    return step_lib.jit_train_step(self._train_step(), state_shardings, self.mesh,
                                   self.compiler_options)

  def jitted_multi_step(self, state_shardings, steps_per_dispatch: int):
    """Several steps per dispatch over a buffer of batches (see `step.jit_multi_step`)."""
    return step_lib.jit_multi_step(self._train_step(), state_shardings, self.mesh,
                                   steps_per_dispatch, self.compiler_options)

  def compiled_train_step(self, state, state_shardings):
    """The jitted step compiled ahead of its first call for `state`'s shapes, once every process
    has compiled it (so they set up their collectives together)."""
    batch_sharding = sharding_lib.batch_sharding(self.mesh)
    abstract_batch = {
        view: jax.ShapeDtypeStruct((self.global_batch, *self.image_shape), jax.numpy.uint8,
                                   sharding=batch_sharding)
        for view in ("view1", "view2")}
    # The pipeline's int32 labels: class indices, or multi-hot vectors of multi-label data.
    label_shape = ((self.config.data.num_classes,)
                   if self.config.data.label_type == "multi_label" else ())
    abstract_batch["label"] = jax.ShapeDtypeStruct((self.global_batch, *label_shape),
                                                   jax.numpy.int32, sharding=batch_sharding)
    compiled = self.jitted_train_step(state_shardings).lower(state, abstract_batch).compile()
    distributed.wait_for_all_processes("train_step_compiled")
    return compiled

  def train_dataset(self):
    return input_pipeline.build_train_dataset(
        self.config, self.global_batch, jax.process_index(), jax.process_count())

  def encoder(self, params, batch_stats) -> export_lib.Encoder:
    """The backbone of an online network as an `Encoder` (what `load_encoder` returns)."""
    return export_lib.Encoder(self.config.model,
                              self.objective.encoder_variables(params, batch_stats),
                              self.config.data.image_size, self.config.data.mean,
                              self.config.data.std, metadata={})

  def encoder_variables(self, state) -> Any:
    return self.objective.encoder_variables(state.params, state.batch_stats)

  def checkpointer(self) -> checkpointing.TrainCheckpointer:
    return checkpointing.TrainCheckpointer(os.path.join(self.workdir, CHECKPOINT_DIR),
                                           max_to_keep=self.config.keep_checkpoints)


def _experiment_or_config_error(config: ml_collections.ConfigDict, workdir: str,
                                devices=None) -> Experiment:
  """Builds the experiment; a ValueError raised while doing so is a problem with the config
  (e.g. a MoCo queue that the batch does not divide) and is reported as one."""
  try:
    return Experiment(config, workdir, devices=devices)
  except config_validation.ConfigError:
    raise
  except ValueError as error:
    raise config_validation.ConfigError(str(error)) from error


def _export(experiment: Experiment, state, step: int) -> str:
  config = experiment.config
  return export_lib.export_encoder(
      os.path.join(experiment.workdir, ENCODER_DIR), model_config=config.model,
      variables=experiment.encoder_variables(state),
      image_size=config.data.image_size, mean=config.data.mean, std=config.data.std,
      metadata={"objective": config.objective, "config_name": config.name, "step": step})


def export_latest_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes WORKDIR/encoder from the latest checkpoint in `workdir` (export on demand)."""
  experiment = _experiment_or_config_error(config, workdir)
  is_lead = distributed.is_lead_process()
  with workdir_owner.own(experiment.workdir, enabled=is_lead):
    checkpointer = experiment.checkpointer()
    if checkpointer.latest_step() is None:
      raise FileNotFoundError(
          f"no checkpoint in {os.path.join(experiment.workdir, CHECKPOINT_DIR)} to export; train "
          "first with the same --config and --workdir")
    workdir_config.check_same_run(config, experiment.workdir)
    step, state = checkpointer.restore_newest_good(
        experiment.abstract_sharded_state(), None,
        os.path.join(experiment.workdir, checkpointing.SET_ASIDE_DIR), move_aside=is_lead)
    checkpointer.close()
    return _export(experiment, state, step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_at_step: int | None = None, show_progress: bool = True,
                       devices=None) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints) and returns the summary.

  `stop_at_step` saves a checkpoint at that step and raises `Preempted`, exactly as a SIGTERM
  would: tests use it to interrupt a run deterministically. `devices` (default: all) is the
  devices the mesh spans. A workdir that another live run owns is refused (`WorkdirBusy`)."""
  wall_start = time.perf_counter()
  experiment = _experiment_or_config_error(config, workdir, devices)
  with workdir_owner.own(experiment.workdir, enabled=distributed.is_lead_process()):
    return _train_and_evaluate_owned(experiment, wall_start, stop_at_step, show_progress)


def _train_and_evaluate_owned(experiment: Experiment, wall_start: float,
                              stop_at_step: int | None, show_progress: bool) -> dict[str, Any]:
  config = experiment.config
  mesh = experiment.mesh
  is_lead = distributed.is_lead_process()

  state, state_shardings = experiment.initial_state()
  checkpointer = experiment.checkpointer()
  iterator = iter(experiment.train_dataset())

  # One encoder (and its compiled functions) for every evaluation of this run's backbone.
  encoder = experiment.encoder(*distributed.to_host((state.params, state.batch_stats)))
  online_knn = config.eval.knn.copy_and_resolve_references()
  online_knn.ks = tuple(online_knn.ks)[:1]

  if checkpointer.latest_step() is not None:
    workdir_config.check_same_run(config, experiment.workdir)
    restored, state = checkpointer.restore_newest_good(
        checkpointing.abstract_like(state, state_shardings), iterator,
        os.path.join(experiment.workdir, checkpointing.SET_ASIDE_DIR), move_aside=is_lead)
    logging.info("Resumed from the checkpoint at step %d in %s", restored, experiment.workdir)
  elif is_lead:
    workdir_config.record(config, experiment.workdir)
  start_step = int(jax.device_get(state.step))

  announce = show_progress and is_lead
  if announce:
    print(f"compiling the train step of {config.name} ...", flush=True)
  compile_start = time.perf_counter()
  jitted_step = experiment.compiled_train_step(state, state_shardings)
  if announce:
    print(f"compiled in {time.perf_counter() - compile_start:.0f} s", flush=True)

  writer = metric_writers.create_writer(experiment.workdir, lead=is_lead,
                                        tensorboard=config.tensorboard,
                                        wandb=config.get("wandb"),
                                        run_name=config.name)
  if is_lead:
    _save_class_list(config, experiment.workdir)
  if start_step == 0 and is_lead:
    writer.write_hparams({key: str(value)
                          for key, value in workdir_config.flatten(config.to_dict()).items()})
  progress = monitoring.Progress(experiment.total_steps, start_step, experiment.global_batch,
                                 enabled=show_progress)
  metrics_history = run_records.JsonlHistory(
      os.path.join(experiment.workdir, run_records.METRICS_FILE), enabled=is_lead)
  analysis_history = run_records.JsonlHistory(
      os.path.join(experiment.workdir, run_records.ANALYSIS_FILE), enabled=is_lead)
  for history in (metrics_history, analysis_history):
    history.truncate_after(start_step)

  accumulated = None
  with preemption.preemption_watch() as preemption_notice:
    for step in range(start_step, experiment.total_steps):
      batch = sharding_lib.host_batch_to_global(next(iterator), mesh)
      state, metrics = jitted_step(state, batch)
      accumulated = metrics if accumulated is None else accumulated.merge(metrics)
      done = step + 1

      if done % config.log_every_steps == 0 or done == experiment.total_steps:
        values = {k: float(v) for k, v in distributed.to_host(accumulated.compute()).items()}
        accumulated = None
        values["images_per_second"], values[run_records.TIMED_SECONDS] = progress.update(
            done, values["loss"])
        if is_lead:
          writer.write_scalars(done, values)
        metrics_history.append(done, values)
        nonfinite = int(jax.device_get(state.nonfinite_steps))
        if nonfinite >= config.max_nonfinite_steps:
          checkpointer.close()
          raise NonFiniteTraining(
              f"{nonfinite} consecutive steps up to step {done} had a non-finite loss or "
              "gradient (they were skipped, so params are intact); lower optim.base_lr or check "
              "the data")

      if config.knn_every_steps > 0 and done % config.knn_every_steps == 0 \
          and done != experiment.total_steps:
        knn = EVALUATORS["knn"].evaluate(
            {"trained": encoder.with_variables(experiment.encoder_variables(state))},
            EvalData(config, mesh), online_knn).results["trained"]
        # Multi-label data reports the mean AUC over labels instead of top-1.
        metric = "mean_auc" if "mean_auc" in knn else "top1"
        if is_lead:
          writer.write_scalars(done, {f"online_knn_{metric}": knn[metric]})
        metrics_history.append(done, {f"online_knn_{metric}": knn[metric]})
        progress.write(f"step {done}: online knn_{metric} {knn[metric]:.4f}")
        progress.exclude_since_last_update()

      if config.analysis_every_steps > 0 and done % config.analysis_every_steps == 0:
        _record_analysis(experiment, state, done, writer, analysis_history, is_lead)

      # Polled at every step by every process (the multi-process sync point requires it).
      preempted = preemption_notice.should_stop(done)
      stopping = preempted or (stop_at_step is not None and done >= stop_at_step)
      if stopping or done % config.checkpoint_every_steps == 0:
        checkpointer.save(done, state, iterator)
      if stopping:
        checkpointer.close()
        writer.close()
        progress.close()
        raise Preempted(done)

  if experiment.total_steps not in checkpointer.all_steps():
    checkpointer.save(experiment.total_steps, state, iterator)
  checkpointer.close()
  progress.close()
  if jax.process_count() > 1:
    _report_process_agreement(config, state)

  trained = encoder.with_variables(distributed.to_host(experiment.encoder_variables(state)))
  _export(experiment, state, experiment.total_steps)   # collective; process 0 writes

  evaluation, eval_splits = {}, {}
  if config.eval.at_end:
    # The plots of the final evaluation go to WORKDIR/eval.
    eval_dir = os.path.join(experiment.workdir, EVAL_DIR)
    os.makedirs(eval_dir, exist_ok=True)
    eval_data = EvalData(config, mesh, eval_dir)
    reports = runner.evaluate_with_baselines(trained, "trained", eval_data)
    evaluation = runner.summary_metrics(reports)
    eval_splits = eval_data.splits_read()
    if is_lead:
      results_files.write(eval_dir, evaluation,
                          f"{config.name} after {experiment.total_steps} steps")

  # From the records of the whole run (every resume), so that a relaunch of a finished run, or
  # a resume after a kill during the evaluation, writes the same figures again.
  training = run_records.training_figures(run_records.read_jsonl(metrics_history.path),
                                          experiment.global_batch, experiment.total_steps)
  summary = {
      "config_name": config.name,
      "objective": config.objective,
      "steps": experiment.total_steps,
      "steps_per_epoch": experiment.steps_per_epoch,   # the comparison figure's epoch axis
      "final_loss": training["final_loss"],
      "images_per_second": training["images_per_second"],
      "wall_time_seconds": time.perf_counter() - wall_start,
      "eval": evaluation,
      "eval_splits": eval_splits,   # what the evaluation read of each split (all, or capped)
      "config": config.to_dict(),   # what the run was, overrides included (sweep tables)
  }
  if is_lead:
    run_records.write_json_atomically(os.path.join(experiment.workdir, SUMMARY_FILE), summary)
    writer.write_scalars(experiment.total_steps, {f"eval/{name}/{key}": value
                                             for name, results in evaluation.items()
                                             for key, value in results.items()})
    if evaluation:
      print(results_table(summary), flush=True)
  writer.close()
  return summary


def _save_class_list(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes WORKDIR/classes.txt for sources with named classes (folders, CSVs, medical sets), so
  the label order of this run can be pinned later with --config.data.class_list."""
  if config.data.source not in input_sources.FILE_SOURCES:
    return
  classes = input_sources.make_source(config.data, config.data.train_split).classes
  if classes:
    with open(os.path.join(workdir, CLASSES_FILE), "w") as f:
      f.write("".join(f"{name}\n" for name in classes))


def _record_analysis(experiment: Experiment, state, step: int, writer, history,
                     is_lead: bool) -> None:
  """Runs the objective's host-side analysis on the current state: the record goes to
  analysis.jsonl, and its scalar entries to the metric writer."""
  record = experiment.objective.analysis(
      *distributed.to_host((state.params, state.objective_state)))
  if not record:
    return
  history.append(step, record)
  if is_lead:
    writer.write_scalars(step, {f"analysis/{key}": value for key, value in record.items()
                                if isinstance(value, (int, float))})


def _report_process_agreement(config: ml_collections.ConfigDict, state) -> None:
  """One line per process with what must agree across processes (launch scripts and the
  multi-process test compare them): step, config hash, and a checksum of the parameters and BN
  statistics as this process holds them."""
  print(f"process {jax.process_index()} of {jax.process_count()}: "
        f"step {int(distributed.to_host(state.step))} "
        f"config {distributed.config_fingerprint(config)} "
        f"params {distributed.tree_checksum((state.params, state.batch_stats))}", flush=True)


def results_table(summary: dict[str, Any]) -> str:
  """A short text table of the final evaluation: the trained encoder against its baselines."""
  labels = {
      "pixels": "raw pixels",
      "random_init": "random init",
      "random_init_data_bn": "random init, BN stats from data",
      "supervised": "supervised from scratch",
      "trained": f"trained ({summary['objective']})",
  }
  # Multi-label data is scored by the mean AUC over labels instead of top-1.
  multi_label = any("knn_mean_auc" in results for results in summary["eval"].values())
  metric, title = ("mean_auc", "mean AUC") if multi_label else ("top1", "top-1")
  rows = [("encoder", f"kNN {title}", f"linear {title}")]
  for name, label in labels.items():
    if name not in summary["eval"]:
      continue
    results = summary["eval"][name]
    cells = [results.get(f"{protocol}_{metric}") for protocol in ("knn", "linear")]
    rows.append((label, *("-" if value is None else f"{value:.4f}" for value in cells)))
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
           for row in rows]
  lines.insert(1, "  ".join("-" * width for width in widths))
  final_loss = summary["final_loss"]
  header = (f"{summary['config_name']}: {summary['steps']} steps, final loss "
            f"{'-' if final_loss is None else f'{final_loss:.4f}'}, "
            f"{summary['wall_time_seconds']:.0f} s")
  note = capped_note(summary.get("eval_splits", {}))
  return "\n".join([header] + lines + ([note] if note else []))
