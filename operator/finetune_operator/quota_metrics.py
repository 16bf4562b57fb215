"""Prometheus metrics of TrainingQuota admission (registered in the operator's registry)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Gauge, Histogram

from .quota import AdmissionResult


class QuotaMetrics:
    """Quota metrics, registered in the operator's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queued = Gauge(
            "finetune_quota_queued_jobs", "Jobs waiting for a TrainingQuota.", ["quota"], registry=registry
        )
        self.admitted = Gauge(
            "finetune_quota_admitted_jobs",
            "Admitted unfinished jobs per TrainingQuota.",
            ["quota"],
            registry=registry,
        )
        self.usage = Gauge(
            "finetune_quota_usage",
            "Usage of one limit of a TrainingQuota.",
            ["quota", "limit"],
            registry=registry,
        )
        self.limit = Gauge(
            "finetune_quota_limit", "One limit of a TrainingQuota.", ["quota", "limit"], registry=registry
        )
        self.wait = Histogram(
            "finetune_quota_admission_wait_seconds",
            "Time from a FinetuneJob's creation to its quota admission.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
            registry=registry,
        )
        self._series: set[tuple[str, ...]] = set()

    def observe(self, result: AdmissionResult) -> None:
        seen: set[tuple[str, ...]] = set()
        for name, outcome in result.quotas.items():
            self.queued.labels(quota=name).set(len(outcome.queued))
            self.admitted.labels(quota=name).set(len(outcome.admitted))
            seen.add((name,))
            for item in outcome.usage:
                self.usage.labels(quota=name, limit=item.key).set(item.used)
                self.limit.labels(quota=name, limit=item.key).set(item.limit)
                seen.add((name, item.key))
        for series in self._series - seen:  # a deleted quota or limit: drop its series
            gauges = (self.queued, self.admitted) if len(series) == 1 else (self.usage, self.limit)
            for gauge in gauges:
                with contextlib.suppress(KeyError):
                    gauge.remove(*series)
        self._series = seen
