"""Self-test of the strict exposition-format checker used on /metrics: it
must accept valid text and reject each kind of malformation."""

import pytest

import promparse

GOOD = """\
# HELP parley_build_info Build information.
# TYPE parley_build_info gauge
parley_build_info{version="0.1.0",commit="abc"} 1
# HELP parley_http_requests_total HTTP requests by route and status.
# TYPE parley_http_requests_total counter
parley_http_requests_total{route="/healthz",status="200"} 3
parley_http_requests_total{route="/x \\"q\\" \\\\ \\n",status="404"} 1
# HELP parley_http_request_duration_seconds Request duration. A \\\\ and \\n escape.
# TYPE parley_http_request_duration_seconds histogram
parley_http_request_duration_seconds_bucket{route="/healthz",le="0.005"} 2
parley_http_request_duration_seconds_bucket{route="/healthz",le="0.1"} 3
parley_http_request_duration_seconds_bucket{route="/healthz",le="+Inf"} 3
parley_http_request_duration_seconds_sum{route="/healthz"} 0.0123
parley_http_request_duration_seconds_count{route="/healthz"} 3
# HELP parley_up Up.
# TYPE parley_up gauge
parley_up 1 1767225600000
parley_up{x="1"} NaN
parley_up{x="2"} -Inf
parley_up{x="3"} 1e-3
"""


def test_accepts_valid_exposition():
    fams = promparse.parse(GOOD)
    assert set(fams) == {"parley_build_info", "parley_http_requests_total",
                         "parley_http_request_duration_seconds", "parley_up"}
    h = fams["parley_http_request_duration_seconds"]
    assert h.type == "histogram" and len(h.samples) == 5
    lab = fams["parley_http_requests_total"].samples[1].labels["route"]
    assert lab == '/x "q" \\ \n'


BAD = {
    "no_help": "# TYPE a gauge\na 1\n",
    "no_type": "# HELP a A.\na 1\n",
    "help_after_samples": "# TYPE a gauge\na 1\n# HELP a A.\n",
    "two_types": "# HELP a A.\n# TYPE a gauge\n# TYPE a counter\na 1\n",
    "bad_type": "# HELP a A.\n# TYPE a thing\na 1\n",
    "bad_value": "# HELP a A.\n# TYPE a gauge\na one\n",
    "bad_name": "# HELP a A.\n# TYPE a gauge\n1a 1\n",
    "unquoted_label": "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
    "bad_escape": '# HELP a A.\n# TYPE a gauge\na{x="\\t"} 1\n',
    "dup_label": '# HELP a A.\n# TYPE a gauge\na{x="1",x="2"} 1\n',
    "dup_series": '# HELP a A.\n# TYPE a gauge\na{x="1"} 1\na{x="1"} 2\n',
    "dup_series_reordered": ('# HELP a A.\n# TYPE a gauge\na{x="1",y="2"} 1\n'
                             'a{y="2",x="1"} 2\n'),
    "not_contiguous": ("# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\n"
                       'a{x="1"} 1\nb 1\na{x="2"} 1\n'),
    "negative_counter": "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
    "counter_wrong_sample": "# HELP a A.\n# TYPE a counter\na_sum 1\n",
    "no_trailing_newline": "# HELP a A.\n# TYPE a gauge\na 1",
    "trailing_blank": "# HELP a A.\n# TYPE a gauge\na 1 \n",
    "hist_not_cumulative": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 5\n'
                            'h_bucket{le="2"} 3\nh_bucket{le="+Inf"} 5\nh_sum 1\nh_count 5\n'),
    "hist_no_inf": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 5\n'
                    'h_sum 1\nh_count 5\n'),
    "hist_count_mismatch": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 5\n'
                            'h_bucket{le="+Inf"} 6\nh_sum 1\nh_count 5\n'),
    "hist_no_sum": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 1\n'
                    'h_count 1\n'),
    "hist_unsorted": ('# HELP h H.\n# TYPE h histogram\nh_bucket{le="2"} 1\n'
                      'h_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'),
    "hist_bucket_without_le": ('# HELP h H.\n# TYPE h histogram\nh_bucket 1\n'
                               'h_sum 1\nh_count 1\n'),
    "help_bad_escape": "# HELP a A \\t.\n# TYPE a gauge\na 1\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_rejects_malformed_exposition(name):
    with pytest.raises(promparse.ExpositionError):
        promparse.parse(BAD[name])
