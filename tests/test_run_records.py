"""The run's JSON-lines records (metrics.jsonl, analysis.jsonl) and the plot command on them."""

import json
import os

import pytest

from engine_helpers import small_config
from input_pipeline import pipeline
from ssl_jax import plots, run_records, train
from ssl_jax.plots import runs_comparison, training_curves


def test_history_appends_reads_and_drops_records_after_a_resumed_step(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  history = run_records.JsonlHistory(path, enabled=True)
  for step in (10, 20, 30):
    history.append(step, {"loss": step / 10})
  assert run_records.read_jsonl(path) == [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 2.0},
                                         {"step": 30, "loss": 3.0}]
  # A run killed after step 30 but checkpointed at 20 recomputes 21..30: the old copies go.
  history.truncate_after(20)
  history.append(30, {"loss": 3.5})
  assert [(r["step"], r["loss"]) for r in run_records.read_jsonl(path)] == [(10, 1.0), (20, 2.0),
                                                                           (30, 3.5)]
  # Processes other than the lead write nothing.
  quiet = run_records.JsonlHistory(str(tmp_path / "other.jsonl"), enabled=False)
  quiet.append(1, {"loss": 0.0})
  assert not os.path.exists(str(tmp_path / "other.jsonl"))


def test_plot_command_draws_training_curves_and_names_a_missing_run(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    plots.write_plots(str(tmp_path))
  history = run_records.JsonlHistory(str(tmp_path / run_records.METRICS_FILE), enabled=True)
  for step in range(5, 30, 5):
    history.append(step, {"loss": 1.0 / step, "projection_std": 0.1, "rankme": 3.0,
                          "learning_rate": 0.1})
  # The run's config gives the projection width: the spread panel shows 1/sqrt(64) = 0.125.
  (tmp_path / "config.json").write_text('{"name": "moco_v2:digits", '
                                        '"objective_config": {"proj_dim": 64}}')
  drawn = {}
  save = training_curves.save

  def keep_figure(figure, path, source):
    drawn["source"] = source
    drawn.update({axis.get_title(): (axis.get_ylabel(), [list(line.get_ydata())
                                                         for line in axis.get_lines()])
                  for axis in figure.axes})
    drawn["suptitle"] = figure._suptitle.get_text()
    return save(figure, path, source)
  monkeypatch.setattr(training_curves, "save", keep_figure)
  paths = plots.write_plots(str(tmp_path))
  assert os.path.join(str(tmp_path), "plots", "training_curves.png") in paths
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path[:-4] + ".pdf") > 1000
  ylabel, lines = drawn["projection spread"]
  assert ylabel == "std of l2-normalised projections"
  assert lines == [[0.1] * 5, [0.125, 0.125]]   # the run's values, then the reference
  assert drawn["suptitle"] == drawn["source"] == "moco_v2:digits"
  assert drawn["training loss"][0] == "loss"


@pytest.mark.xdist_group("run_safety")
def test_online_knn_is_recorded_beside_the_log_records_and_drawn(tmp_path):
  config = small_config("moco_v2", num_steps=8, log_every_steps=4, knn_every_steps=4,
                        checkpoint_every_steps=8, tensorboard=False)
  summary = train.train_and_evaluate(config, str(tmp_path), show_progress=False)
  records = run_records.read_jsonl(str(tmp_path / run_records.METRICS_FILE))
  # The kNN at step 4 (none at the last step: the final evaluation covers it).
  knn = [record for record in records if "online_knn_top1" in record]
  assert [record["step"] for record in knn] == [4] and set(knn[0]) == {"step", "online_knn_top1"}
  assert 0.1 < knn[0]["online_knn_top1"] <= 1.0   # 10 digit classes: above chance at step 4
  assert [record["step"] for record in records if "loss" in record] == [4, 8]
  # The summary's figures read the log records only.
  assert summary["final_loss"] == records[-1]["loss"]
  # The comparison figure's epoch axis: whole batches of the training split per epoch.
  assert summary["steps_per_epoch"] == (
      pipeline.train_dataset_size(config) // config.batch_size)
  figure = plots.write_plots(str(tmp_path))[0]
  assert figure.endswith("training_curves.png")


def test_plot_command_on_a_directory_of_runs_draws_one_comparison(tmp_path, monkeypatch):
  # Losses of very different scales (and one rising): each is drawn scaled to its own range.
  for name, knn, losses in (("moco_v2", 0.4, (2.0, 1.0)), ("byol", 0.5, (1000.0, 1500.0))):
    history = run_records.JsonlHistory(str(tmp_path / name / run_records.METRICS_FILE),
                                       enabled=True)
    os.makedirs(tmp_path / name)
    for step, loss in zip((100, 200), losses):
      history.append(step, {"loss": loss, run_records.TIMED_SECONDS: 1.0})
      history.append(step, {"online_knn_top1": knn * step / 200})
  (tmp_path / "notes").mkdir()   # not a run: ignored
  # A finished run: its end-of-run kNN (the first k) closes its online kNN curve.
  (tmp_path / "byol" / run_records.SUMMARY_FILE).write_text(json.dumps(
      {"steps": 300, "eval": {"trained": {"knn_top1_k20": 0.6, "knn_top1_k200": 0.55,
                                          "knn_top1": 0.6, "linear_top1": 0.7}}}))
  drawn, x_axis = {}, {}
  save = runs_comparison.save

  def keep_lines(figure, path):
    drawn.clear()
    drawn.update({(axis.get_title(), line.get_label()): list(line.get_ydata())
                  for axis in figure.axes for line in axis.get_lines()})
    x_axis.clear()
    x_axis.update({(axis.get_xlabel(), line.get_label()): list(line.get_xdata())
                   for axis in figure.axes[:1] for line in axis.get_lines()
                   if line.get_label() != "raw pixels"})
    return save(figure, path)
  monkeypatch.setattr(runs_comparison, "save", keep_lines)
  paths = plots.write_plots(str(tmp_path))
  assert paths == [os.path.join(str(tmp_path), "plots", "runs_comparison.png")]
  with open(paths[0], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(paths[0][:-4] + ".pdf", "rb") as f:   # the vector copy for a paper
    assert f.read(5) == b"%PDF-"
  assert drawn == {("online kNN top-1", "byol"): [0.25, 0.5, 0.6],
                   ("online kNN top-1", "moco_v2"): [0.2, 0.4],
                   ("training loss, scaled per run", "byol"): [0.0, 1.0],
                   ("training loss, scaled per run", "moco_v2"): [1.0, 0.0]}
  # moco_v2 has no summary (still training): the figure stays in steps.
  assert x_axis == {("step", "byol"): [100, 200, 300], ("step", "moco_v2"): [100, 200]}

  # Once every run says its steps per epoch, the x axis is the epoch, each run by its own.
  # Raw pixels' end-of-run kNN is drawn as a reference line on the kNN panel.
  for name, steps_per_epoch in (("byol", 100), ("moco_v2", 50)):
    summary_path = tmp_path / name / run_records.SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {
        "steps": 300, "eval": {"trained": {"knn_top1": 0.45}}}
    summary["eval"]["pixels"] = {"knn_top1": 0.55, "linear_top1": 0.4}
    summary_path.write_text(json.dumps({**summary, "steps_per_epoch": steps_per_epoch}))
  plots.write_plots(str(tmp_path))
  assert x_axis == {("epoch", "byol"): [1.0, 2.0, 3.0], ("epoch", "moco_v2"): [2.0, 4.0, 6.0]}
  assert drawn == {("online kNN top-1", "byol"): [0.25, 0.5, 0.6],
                   ("online kNN top-1", "moco_v2"): [0.2, 0.4, 0.45],
                   ("online kNN top-1", "raw pixels"): [0.55, 0.55],
                   ("training loss, scaled per run", "byol"): [0.0, 1.0],
                   ("training loss, scaled per run", "moco_v2"): [1.0, 0.0]}


def test_loss_scaled_to_its_own_range():
  assert runs_comparison.scaled_to_range([6.0, 7.5, 9.0]) == [0.0, 0.5, 1.0]
  assert runs_comparison.scaled_to_range([-0.2, -0.9, -0.2]) == [1.0, 0.0, 1.0]
  assert runs_comparison.scaled_to_range([3.0, 3.0]) == [0.0, 0.0]   # constant: no division by 0
