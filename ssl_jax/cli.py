r"""ssl-jax's command line: pretrain (and evaluate) a config, or export the encoder of a checkpoint.

Run as `python main.py` in a clone, or as `ssl-jax` where the package is installed (the same
flags; the default config is the installed configs/moco_v2.py:digits).

  python main.py                                     # default job: MoCo v2 on digits
  python main.py --config=configs/byol.py:digits --workdir=runs/byol
  python main.py --config=configs/moco_v2.py:digits --config.optim.base_lr=0.1 --workdir=runs/lr0.1
  python main.py --config=configs/moco_v2.py:digits --workdir=runs/moco --mode=export
  python main.py --workdir=runs/moco --mode=plot     # PNG plots of what the run recorded
  python main.py --mode=eval --config=configs/eval/linear.py:digits \
      --config.encoder=runs/moco/encoder --workdir=runs/moco/eval/linear   # see configs/eval/
  python main.py --mode=convert --checkpoint=moco_v2_800ep_pretrain.pth.tar --source=mocov2_r50 \
      --workdir=converted/mocov2                     # a PyTorch checkpoint -> WORKDIR/encoder
  python main.py --mode=sweep --config=configs/moco_v2.py:digits \
      --sweep=optim.base_lr=3e-4,1e-3,3e-3 --workdir=runs/lr_sweep   # one run per value, a table
  python main.py --mode=sweep_summary --workdir=runs/lr_sweep       # the table again

Running the same command again resumes from the latest checkpoint in --workdir. SIGTERM saves a
checkpoint and exits with status 143.

Several processes (hosts) run the same command; they find each other from SLURM / Open MPI /
Cloud TPU environment variables, or from --coordinator_address, --num_processes and --process_id
(see docs/launching.md).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

# Quieter TensorFlow (imported by clu's TensorBoard writer); must precede its import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import configs  # noqa: E402  (the package of config files: found in a clone and in an install)

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(configs.__file__)),
                              "moco_v2.py") + ":digits"

flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, TensorBoard events, "
                    "the exported encoder and summary.json (relative paths are fine).")
flags.DEFINE_enum("mode", "train", ["train", "export", "plot", "eval", "convert", "sweep",
                                    "sweep_summary"],
                  "train: pretrain (resuming if possible), export, evaluate. export: write the "
                  "encoder of the latest checkpoint in --workdir to WORKDIR/encoder. plot: draw "
                  "the run's recorded metrics and analysis signals to WORKDIR/plots/*.png and "
                  ".pdf. eval: run the evaluation config (configs/eval/*.py) on its "
                  "--config.encoder, writing WORKDIR/results.json, results.csv, results.tex and "
                  "plots. convert: a PyTorch checkpoint (--checkpoint, "
                  "--source) to WORKDIR/encoder. sweep: one training run per override set of "
                  "--sweep / --sweep_file, each in WORKDIR/<overrides>, then a table. "
                  "sweep_summary: the table of the sweep in --workdir.")
flags.DEFINE_integer("plot_dpi", 150, "Resolution of every PNG figure a mode draws (training "
                     "curves, evaluation plots); each is also written as a vector PDF beside it.",
                     lower_bound=30, upper_bound=1200)
# --mode=convert (see ssl_jax/torch_import and the sources in docs/checkpoints.md).
flags.DEFINE_string("checkpoint", None, "convert: the .pth / .pth.tar / .safetensors file.")
flags.DEFINE_string("source", None, "convert: the checkpoint family, e.g. mocov2_r50, swav_r50, "
                    "simclr_r50, torchvision_densenet121 (it sets key prefix, architecture and "
                    "input normalisation).")
flags.DEFINE_string("arch", None, "convert: backbone override (resnet18, resnet50, densenet121).")
flags.DEFINE_string("key_prefix", None, "convert: prefix in front of the torchvision names, "
                    "overriding the source's (e.g. 'module.encoder_q.').")
# --mode=sweep and --mode=sweep_summary (see ssl_jax/sweeps).
flags.DEFINE_multi_string("sweep", [], "sweep: key=v1,v2,... (repeatable, or ';' between keys); "
                          "the runs are the product of the values, e.g. "
                          "--sweep=optim.base_lr=1e-3,3e-3 --sweep=model.width=8,16.")
flags.DEFINE_string("sweep_file", None, "sweep: path.py[:arg] whose get_sweep(arg) returns a list "
                    "of override dicts ({'optim.base_lr': 0.1, ...}); combines with --sweep.")
flags.DEFINE_enum("sweep_emit", "run", ["run", "slurm", "list"], "sweep: run the runs here one "
                  "after another (run), write WORKDIR/sweep.sbatch, a SLURM job array (slurm), or "
                  "only list them (list).")
flags.DEFINE_multi_string("sweep_sbatch", [], "sweep_emit=slurm: extra #SBATCH options, e.g. "
                          "--sweep_sbatch=--gres=gpu:1 --sweep_sbatch=--time=04:00:00.")
flags.DEFINE_string("sweep_metric", "eval.trained.knn_top1", "sweep, sweep_summary: the "
                    "summary.json metric that sorts the table (descending).")
flags.DEFINE_bool("sweep_ascending", False, "sweep, sweep_summary: sort ascending (e.g. for "
                  "final_loss).")

# Multi-process launches (ssl_jax/distributed.py); unset: read from the cluster environment, if any.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordination service "
                    "(multi-process launch without SLURM/MPI/TPU environment).")
flags.DEFINE_integer("num_processes", None, "Number of processes of the job (with "
                     "--coordinator_address and --process_id).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, --num_processes).")
flags.DEFINE_bool("distributed", False, "Join a multi-process job that JAX detects from the "
                  "environment (Cloud TPU VM pod slices, Kubernetes); SLURM and Open MPI launches "
                  "of several tasks are joined without it.")

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143   # 128 + SIGTERM, what schedulers expect of a terminated job


def _load_config_from_argv(argv: list[str]):
  """The config named by --config (without overrides), to explain a rejected override."""
  import importlib.util
  spec_arg = DEFAULT_CONFIG
  for index, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec_arg = arg.split("=", 1)[1]
    elif arg == "--config" and index + 1 < len(argv):
      spec_arg = argv[index + 1]
  path, _, config_arg = spec_arg.partition(":")
  module_spec = importlib.util.spec_from_file_location("_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(config_arg or None)


def _exit_on_unknown_override(argv: list[str], error: Exception) -> None:
  """Exits 2 with one line naming a misspelt --config.<key> and the allowed fields; re-raises
  `error` when no override explains it."""
  from ssl_jax import config_validation
  try:
    config = _load_config_from_argv(argv)
  except Exception:  # the config itself is broken: report the original error
    raise error from None
  for arg in argv[1:]:
    if arg.startswith("--config.") or arg.startswith("--noconfig."):
      key = arg.split("=", 1)[0].split("config.", 1)[1]
      message = config_validation.unknown_key_message(config, key)
      if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
  raise error


def _define_config_flag() -> None:
  try:
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG,
        "Config file and its arg, e.g. configs/byol.py:digits,tiny. Override fields with "
        "--config.<field>=<value>.", lock_config=True)
  except (AttributeError, KeyError) as error:
    # Without --config, ml_collections loads the default config and applies the command line's
    # overrides right here, at definition, before any flag is parsed.
    _exit_on_unknown_override(sys.argv, error)


_define_config_flag()


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with a clear message (and exit 2) for a misspelt --config.<key>."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:   # wrong type, unknown dataset in the config arg, bad flag
    lines = [line for line in str(error).splitlines() if line.strip()]
    # A config file that raised embeds its traceback; its first and last lines say it all.
    message = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1].strip()}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  except (AttributeError, KeyError) as error:
    _exit_on_unknown_override(argv, error)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help and flag errors do not pay for jax.
  from input_pipeline.file_list_source import TooManyUnreadableImages
  from ssl_jax import checkpointing, config_validation, cpu, disk_space, distributed, train
  from ssl_jax.checkpointing import NoUsableCheckpoint
  from ssl_jax.export import InvalidEncoder
  from ssl_jax.run_records import RecordError
  from ssl_jax.torch_import.errors import ConversionError
  from ssl_jax.workdir_owner import WorkdirBusy

  if flags.FLAGS.mode in ("train", "export", "eval"):
    try:   # before anything creates a JAX backend
      distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                             flags.FLAGS.process_id, from_environment=flags.FLAGS.distributed)
    except ValueError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)

  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("absl").setLevel(std_logging.WARNING)
  if flags.FLAGS.mode in ("train", "export", "eval", "convert"):
    # The process settings that make CPU training fast (XLA flags, malloc, inline dispatch): after
    # joining the job and before any other JAX work, since JAX reads them when it creates its
    # backends (which this call then does).
    cpu.configure()

  # orbax's failed reads and writes leave dozens of identical asyncio reports behind.
  sys.unraisablehook = checkpointing.quiet_closed_event_loop_reports(sys.unraisablehook)

  if flags.FLAGS.plot_dpi != flags.FLAGS["plot_dpi"].default:
    from ssl_jax import plots   # matplotlib only where a dpi is asked for
    plots.set_dpi(flags.FLAGS.plot_dpi)

  config = flags.FLAGS.config
  try:
    if flags.FLAGS.mode in ("sweep", "sweep_summary"):
      sys.exit(_sweep_mode())
    if flags.FLAGS.mode == "plot":
      from ssl_jax import plots
      for path in plots.write_plots(flags.FLAGS.workdir):
        print(f"wrote {path}")
    elif flags.FLAGS.mode == "eval":
      from ssl_jax.evaluation import runner
      runner.run_evaluation(config, flags.FLAGS.workdir)
    elif flags.FLAGS.mode == "convert":
      from ssl_jax import torch_import
      path, report = torch_import.convert_checkpoint(
          flags.FLAGS.checkpoint, flags.FLAGS.source, flags.FLAGS.workdir, arch=flags.FLAGS.arch,
          key_prefix=flags.FLAGS.key_prefix)
      print(f"{report.summary()}\nwrote the encoder to {path}")
    elif flags.FLAGS.mode == "export":
      path = train.export_latest_checkpoint(config, flags.FLAGS.workdir)
      print(f"exported the encoder to {path}")
    else:
      train.train_and_evaluate(config, flags.FLAGS.workdir)
  except (config_validation.ConfigError, FileNotFoundError, ConversionError,
          InvalidEncoder) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  except train.Preempted as preempted:
    print(str(preempted), file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except (train.NonFiniteTraining, TooManyUnreadableImages, WorkdirBusy, NoUsableCheckpoint,
          RecordError, disk_space.DiskFull) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  except Exception as error:
    full_disk = disk_space.full_disk_message(error, flags.FLAGS.workdir, train.CHECKPOINT_DIR)
    if full_disk is None:
      raise
    print(f"error: {full_disk}", file=sys.stderr)
    sys.exit(1)


def _sweep_mode() -> int:
  from ssl_jax import sweeps
  from ssl_jax.sweeps.definition import SweepError
  if not flags.FLAGS["workdir"].present:
    raise SweepError(f"--mode={flags.FLAGS.mode} needs --workdir, the sweep's directory (each "
                     "run gets a subdirectory)")
  if flags.FLAGS.mode == "sweep_summary":
    return sweeps.print_summary(flags.FLAGS.workdir, flags.FLAGS.sweep_metric,
                                ascending=flags.FLAGS.sweep_ascending)
  config_flag = flags.FLAGS["config"]
  return sweeps.run_sweep(
      flags.FLAGS.config, config_spec=config_flags.get_config_filename(config_flag),
      base_overrides=config_flags.get_override_values(config_flag),
      main_path=os.path.abspath(sys.argv[0]), sweep_dir=flags.FLAGS.workdir,
      sweep_flags=flags.FLAGS.sweep, sweep_file=flags.FLAGS.sweep_file,
      emit=flags.FLAGS.sweep_emit, metric=flags.FLAGS.sweep_metric,
      ascending=flags.FLAGS.sweep_ascending, sbatch_options=flags.FLAGS.sweep_sbatch)


def run() -> None:
  """The entry point of main.py and of the `ssl-jax` command."""
  # --help prints the docstring and key flags of the script that was run (main.py, or the
  # installed `ssl-jax`): this module's.
  sys.modules["__main__"].__doc__ = __doc__
  for flag in flags.FLAGS.get_flags_for_module(__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
