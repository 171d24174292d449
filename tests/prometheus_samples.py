"""Prometheus' text exposition read back into samples, for tests that check what a process counted."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

#: Each sample's value by its name and its labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_port(port: int, timeout_s: float = 5.0) -> Samples:
    """The samples served at ``http://127.0.0.1:<port>/metrics``."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse_samples(response.text)
