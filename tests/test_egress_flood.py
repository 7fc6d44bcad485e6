"""A board cannot stall the harness: what it sends costs linear time and bounded memory, and a
flood is a finding recorded with counts and a sample, never replayed in full into the record."""

from __future__ import annotations

import json

from harness.formats.egress_policy import FLOOD_NAMES, judge, load_policy
from harness.formats.flows import (
    MAX_RECORDED_FLOWS, analyze_bytes, flow_analysis_from_record, flow_analysis_json, flow_analysis_record,
)
from harness.results.record import canonical_json

from test_flows_policy import POLICY, RESOLVER, dns_answer, dns_query, in4, out4, pcapng, tcp, udp

SINK = "10.0.0.1"


def _name_flood(n: int) -> list[bytes]:
    """The sinkhole answers every name with one address; the board connects after each lookup."""
    frames = []
    for i in range(n):
        name = f"n{i}.acme-flood.example"
        port = 20000 + i % 40000
        frames += [out4(RESOLVER, 17, udp(port, 53, dns_query(i & 0xFFFF, name))),
                   in4(RESOLVER, 17, udp(53, port, dns_answer(i & 0xFFFF, name, SINK))),
                   out4(SINK, 6, tcp(port + 1, 443, 0x02, seq=i))]
    return frames


def test_each_flow_keeps_a_bounded_number_of_the_names_that_led_to_its_address():
    a = analyze_bytes(pcapng(_name_flood(400)))
    conns = [f for f in a.flows if f.proto == "tcp"]
    assert len(conns) == 400
    last = conns[-1]
    assert last.resolved_names[0] == "n399.acme-flood.example"   # the most recent first
    assert len(last.resolved_names) == 8 and last.resolved_unlisted == 392
    assert sum(len(f.resolved_names) for f in a.flows) <= 8 * len(a.flows)
    assert (a.dns_query_count, a.dns_name_count, a.resolution_count) == (400, 400, 400)
    assert len(a.dns_queries) == len(a.resolutions) == 200


def test_a_name_flood_is_a_finding_with_counts_and_the_record_stays_small():
    a = analyze_bytes(pcapng(_name_flood(4000)))
    j = judge(load_policy(POLICY), a)
    assert j.outcome == "FAIL"
    assert j.violations[0].why.startswith(f"4000 distinct names queried in the capture (more than {FLOOD_NAMES}): "
                                          f"a flood; 4000 queries, e.g. n0.acme-flood.example")
    assert j.violations[1].why.startswith("8000 flows in the capture (more than")
    record = flow_analysis_record(a)
    assert len(record["flows"]) == MAX_RECORDED_FLOWS and record["flow_count"] == 8000
    size = len(canonical_json(record))
    assert size < 1_000_000, size
    again = judge(load_policy(POLICY), flow_analysis_from_record(json.loads(json.dumps(record))))
    assert again.outcome == "FAIL" and [v.why for v in again.violations[:2]] == [v.why for v in j.violations[:2]]
    assert len(json.dumps(flow_analysis_json(a))) < 1_000_000


def test_one_flow_asking_more_names_than_its_record_keeps_is_a_flood_even_if_all_are_allowed():
    frames = [out4(RESOLVER, 17, udp(5000, 53, dns_query(i, f"h{i}.lab.example"))) for i in range(100)]
    a = analyze_bytes(pcapng(frames))
    (f,) = a.flows
    assert len(f.dns_queries) == 64 and f.dns_queries_unlisted == 36
    j = judge(load_policy({**POLICY, "dns_tunnel_check": False}), a)
    assert j.outcome == "FAIL" and "asked about 100 names" in j.violations[0].why


def test_a_few_names_are_no_flood():
    j = judge(load_policy({"allow": [{"dns": "*.acme-flood.example"}]}), analyze_bytes(pcapng(_name_flood(20))))
    assert j.outcome == "PASS", j.violations
