"""The suite's own scheduling: tests that share an expensive run stay on one xdist worker.

Each objective's tiny-job tests and the two-process tests share one run per worker through an
`xdist_group`. xdist implements a group by appending '@group' to the node id. A pytest/xdist pair
that loses that tag spreads a group over both workers, and each worker repeats the shared run:
with pytest 9.2 and xdist 3.8 the suite of 2026-11-29 ran eight tiny jobs twice (51 min).
"""

import pytest


@pytest.mark.xdist_group("grouping_check")
def test_every_grouped_test_carries_its_group_in_the_node_id(request):
  if not getattr(request.config.option, "loadgroup", False):
    return   # not under `--dist loadgroup` (e.g. -n 0): nothing is scheduled by group
  grouped = [item for item in request.session.items if item.get_closest_marker("xdist_group")]
  untagged = [item.nodeid for item in grouped if "@" not in item.nodeid]
  assert not untagged, (
      f"pytest-xdist did not tag {len(untagged)} of {len(grouped)} xdist_group tests (e.g. "
      f"{untagged[0]}): --dist loadgroup splits their groups over workers and repeats the shared "
      "runs. Install the pytest range pinned by pyproject.toml's 'test' extra.")
  assert request.node.nodeid.endswith("@grouping_check")
