"""The operator survives its CRDs going away (uninstall + reinstall, a replaced CRD): it says that it waits for
them, and resumes when they are back. On a real kube-apiserver, deleting the CRDs made kopf's watches fail with
`404 page not found` and the operator exit."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tests.conftest import eventually
from tests.integration.operator_support import (
    NS,
    data_config_map,
    run_to_success,
    st_job,
    wait_pod,
)

from finetune_operator.api.crdgen import all_crds
from finetune_operator.local.semantics import ApiError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CRDS = ("finetunejobs.finetune.dev", "trainingquotas.finetune.dev")


def _waiting(caplog: pytest.LogCaptureFixture) -> bool:
    return any("waiting for the CRDs" in r.getMessage() for r in caplog.records)


async def test_crds_deleted_and_recreated_while_running(
    cluster: Any, operator_factory: Any, kubelet: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="finetune_operator.main")
    op = await operator_factory()
    await data_config_map(cluster)
    await cluster.create(st_job("before"))
    await wait_pod(cluster, 1, "before")

    for name in CRDS:  # as `kubectl delete -f crds/` does
        await cluster.delete("customresourcedefinitions", None, name)
    # the custom resources went with their CRDs, and their endpoints with them (404, like the real server)
    with pytest.raises(ApiError) as gone:
        await cluster.get("finetunejobs", NS, "before")
    assert gone.value.code == 404
    await eventually(lambda: _waiting(caplog), timeout=30)
    assert op._thread is not None and op._thread.is_alive() and not op.errors  # alive, waiting
    message = next(r.getMessage() for r in caplog.records if "waiting for the CRDs" in r.getMessage())
    assert all(name in message for name in CRDS), message

    for crd in all_crds().values():  # reinstalled
        await cluster.create(crd)
    await eventually(
        lambda: any("the operator resumes" in r.getMessage() for r in caplog.records), timeout=60
    )
    status = await run_to_success(cluster, kubelet, "after", timeout=60)
    assert status["metrics"]["after"]["mrrAt10"] == 0.71
    assert op._thread.is_alive() and not op.errors


async def test_stops_cleanly_while_waiting_for_the_crds(
    cluster: Any, operator_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="finetune_operator.main")
    op = await operator_factory()
    for name in CRDS:
        await cluster.delete("customresourcedefinitions", None, name)
    await eventually(lambda: _waiting(caplog), timeout=30)
    await op.stop()  # joins within 15 s, no error
