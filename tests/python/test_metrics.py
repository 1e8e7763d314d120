"""`/metrics` read by the Prometheus project's own Python client parser."""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import create_post, like, register


def test_the_official_parser_reads_every_family_with_help_and_a_conventional_type(likewise):
    alice = register(likewise, "alice")
    bob = register(likewise, "bob")
    like(likewise, bob, create_post(likewise, alice))

    with urllib.request.urlopen(likewise.base_url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    assert families, text
    for name, family in families.items():
        assert name.startswith("likewise_"), name
        assert family.documentation, f"{name} has no HELP"
        assert family.type in ("counter", "gauge", "histogram"), (name, family.type)
    # The parser strips `_total` from counter family names.
    assert families["likewise_store_key_writes"].type == "counter"
    assert families["likewise_http_requests"].type == "counter"
    assert families["likewise_http_request_duration_seconds"].type == "histogram"
    likes = [
        s for s in families["likewise_http_requests"].samples
        if s.labels.get("route") == "/api/posts/{id}/like" and s.labels.get("method") == "PUT"
    ]
    assert likes and likes[0].value >= 1, families["likewise_http_requests"].samples
