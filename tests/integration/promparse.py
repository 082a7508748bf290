"""A strict parser and checker of the Prometheus text exposition format
(version 0.0.4), used on Parley's /metrics.

parse(text) returns {family name: Family} or raises ExpositionError naming
the line. Checks: every line is a comment, blank, or a sample matching the
grammar; every family has exactly one # HELP and one # TYPE, both before its
samples; a family's samples are contiguous; sample names fit the family type
(histogram: _bucket with le, _sum, _count; summary: quantile, _sum, _count);
no duplicate series; label names unique per sample and valid; label values
use only the escapes \\\\, \\" and \\n; histogram buckets are cumulative,
sorted by le, end with le="+Inf" and that bucket equals _count; counters and
_count/_bucket values are non-negative.
"""

import math
import re

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")

_name_re = re.compile(METRIC_NAME)
_label_name_re = re.compile(LABEL_NAME)
_value_re = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf)|NaN")
_ts_re = re.compile(r"-?\d+")
_help_re = re.compile(r"# HELP (" + METRIC_NAME + r")(?: (.*))?$")
_type_re = re.compile(r"# TYPE (" + METRIC_NAME + r") (\S+)$")


class ExpositionError(Exception):
    pass


class Sample:
    def __init__(self, name, labels, value, lineno):
        self.name = name
        self.labels = labels  # dict
        self.value = value
        self.lineno = lineno

    def key(self):
        return (self.name, tuple(sorted(self.labels.items())))


class Family:
    def __init__(self, name):
        self.name = name
        self.help = None
        self.type = None
        self.samples = []
        self.help_line = None
        self.type_line = None


def _err(lineno, msg, line=None):
    where = f"line {lineno}: " if lineno else ""
    if line is not None:
        msg += f": {line!r}"
    return ExpositionError(where + msg)


def _help_escapes_ok(doc):
    """HELP text may only use the escapes \\\\ and \\n."""
    i = 0
    while i < len(doc):
        if doc[i] == "\\":
            if i + 1 >= len(doc) or doc[i + 1] not in ("\\", "n"):
                return False
            i += 2
        else:
            i += 1
    return True


def _parse_value(s, lineno, line):
    if not _value_re.fullmatch(s):
        raise _err(lineno, f"bad sample value {s!r}", line)
    return float(s)


def _parse_labels(s, i, lineno, line):
    """s[i] == '{'; returns (labels, index after '}')."""
    labels = {}
    i += 1
    n = len(s)
    while True:
        if i < n and s[i] == "}":
            return labels, i + 1
        m = _label_name_re.match(s, i)
        if not m:
            raise _err(lineno, "bad label name", line)
        lname = m.group(0)
        i = m.end()
        if i >= n or s[i] != "=":
            raise _err(lineno, f"expected '=' after label {lname}", line)
        i += 1
        if i >= n or s[i] != '"':
            raise _err(lineno, f"label {lname}: value not quoted", line)
        i += 1
        val = []
        while True:
            if i >= n:
                raise _err(lineno, f"label {lname}: unterminated value", line)
            c = s[i]
            if c == "\\":
                if i + 1 >= n or s[i + 1] not in ('\\', '"', 'n'):
                    raise _err(lineno, f"label {lname}: bad escape", line)
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[i + 1]])
                i += 2
                continue
            if c == '"':
                i += 1
                break
            if c == "\n":
                raise _err(lineno, f"label {lname}: raw newline in value", line)
            val.append(c)
            i += 1
        if lname in labels:
            raise _err(lineno, f"duplicate label {lname}", line)
        labels[lname] = "".join(val)
        if i < n and s[i] == ",":
            i += 1
            continue
        if i < n and s[i] == "}":
            return labels, i + 1
        raise _err(lineno, "expected ',' or '}' in label set", line)


def parse_sample(line, lineno=0):
    m = _name_re.match(line)
    if not m:
        raise _err(lineno, "bad metric name", line)
    name = m.group(0)
    i = m.end()
    labels = {}
    if i < len(line) and line[i] == "{":
        labels, i = _parse_labels(line, i, lineno, line)
    rest = line[i:]
    if not rest.startswith(" "):
        raise _err(lineno, "expected a space before the value", line)
    parts = rest.strip(" ").split(" ")
    if rest != rest.rstrip(" ") or "  " in rest.lstrip(" "):
        # The Prometheus parser tolerates some blanks; be strict about
        # trailing blanks and double separators.
        raise _err(lineno, "irregular blanks", line)
    if len(parts) not in (1, 2):
        raise _err(lineno, "expected 'value [timestamp]'", line)
    value = _parse_value(parts[0], lineno, line)
    if len(parts) == 2 and not _ts_re.fullmatch(parts[1]):
        raise _err(lineno, "bad timestamp", line)
    return Sample(name, labels, value, lineno)


def _family_of(sample_name, families, current):
    """The family a sample name belongs to, preferring the current one."""
    cands = [sample_name]
    for suf in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suf):
            cands.append(sample_name[: -len(suf)])
    if current is not None and current.name in cands:
        return current
    for c in cands:
        if c in families:
            return families[c]
    return None


def parse(text):
    if text and not text.endswith("\n"):
        raise ExpositionError("exposition does not end with a newline")
    families = {}
    order = []
    current = None
    finished = set()  # families whose sample block ended
    seen_series = set()
    for lineno, line in enumerate(text.split("\n")[:-1] if text else [], start=1):
        if line.strip() == "":
            continue
        if "\r" in line:
            raise _err(lineno, "carriage return in line", line)
        if line.startswith("#"):
            if line.startswith("# HELP "):
                m = _help_re.match(line)
                if not m:
                    raise _err(lineno, "malformed HELP", line)
                fam = families.get(m.group(1))
                if fam is None:
                    fam = families[m.group(1)] = Family(m.group(1))
                    order.append(fam)
                if fam.help is not None:
                    raise _err(lineno, f"second HELP for {fam.name}", line)
                if fam.samples:
                    raise _err(lineno, f"HELP for {fam.name} after its samples", line)
                doc = m.group(2) or ""
                if not _help_escapes_ok(doc):
                    raise _err(lineno, "bad escape in HELP", line)
                fam.help = doc
                fam.help_line = lineno
            elif line.startswith("# TYPE "):
                m = _type_re.match(line)
                if not m:
                    raise _err(lineno, "malformed TYPE", line)
                if m.group(2) not in TYPES:
                    raise _err(lineno, f"unknown type {m.group(2)}", line)
                fam = families.get(m.group(1))
                if fam is None:
                    fam = families[m.group(1)] = Family(m.group(1))
                    order.append(fam)
                if fam.type is not None:
                    raise _err(lineno, f"second TYPE for {fam.name}", line)
                if fam.samples:
                    raise _err(lineno, f"TYPE for {fam.name} after its samples", line)
                fam.type = m.group(2)
                fam.type_line = lineno
            # other comments are allowed and ignored
            continue
        s = parse_sample(line, lineno)
        fam = _family_of(s.name, families, current)
        if fam is None:
            raise _err(lineno, f"sample {s.name} without HELP/TYPE", line)
        if fam.help is None:
            raise _err(lineno, f"family {fam.name} has samples but no HELP before them", line)
        if fam.type is None:
            raise _err(lineno, f"family {fam.name} has samples but no TYPE before them", line)
        if fam is not current:
            if current is not None:
                finished.add(current.name)
            if fam.name in finished:
                raise _err(lineno, f"samples of {fam.name} are not contiguous", line)
            current = fam
        _check_name_for_type(fam, s, line)
        k = s.key()
        if k in seen_series:
            raise _err(lineno, "duplicate series", line)
        seen_series.add(k)
        fam.samples.append(s)
    for fam in order:
        if fam.help is None or fam.type is None:
            raise ExpositionError(f"family {fam.name} lacks HELP or TYPE")
        _check_family(fam)
    return families


def _check_name_for_type(fam, s, line):
    t = fam.type
    n = s.name
    if t in ("counter", "gauge", "untyped"):
        if n != fam.name:
            raise _err(s.lineno, f"{t} {fam.name}: unexpected sample name {n}", line)
        if t == "counter" and not (s.value >= 0 or math.isnan(s.value)):
            raise _err(s.lineno, "negative counter", line)
    elif t == "histogram":
        if n == fam.name + "_bucket":
            if "le" not in s.labels:
                raise _err(s.lineno, "histogram bucket without le", line)
        elif n in (fam.name + "_sum", fam.name + "_count"):
            if "le" in s.labels:
                raise _err(s.lineno, "le label outside _bucket", line)
        else:
            raise _err(s.lineno, f"histogram {fam.name}: unexpected sample {n}", line)
    elif t == "summary":
        if n == fam.name:
            if "quantile" not in s.labels:
                raise _err(s.lineno, "summary sample without quantile", line)
        elif n not in (fam.name + "_sum", fam.name + "_count"):
            raise _err(s.lineno, f"summary {fam.name}: unexpected sample {n}", line)
    if n.endswith("_count") or n.endswith("_bucket"):
        if s.value < 0 or math.isnan(s.value):
            raise _err(s.lineno, "negative or NaN count", line)


def _le(v, lineno):
    try:
        return float(v)
    except ValueError:
        raise _err(lineno, f"bad le value {v!r}") from None


def _check_family(fam):
    if fam.type != "histogram":
        if fam.type == "summary":
            groups = {}
            for s in fam.samples:
                base = tuple(sorted((k, v) for k, v in s.labels.items() if k != "quantile"))
                groups.setdefault(base, set()).add(s.name)
            for base, names in groups.items():
                if {fam.name + "_sum", fam.name + "_count"} - names:
                    raise ExpositionError(f"summary {fam.name}{dict(base)}: missing _sum or _count")
        return
    groups = {}
    for s in fam.samples:
        base = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if s.name.endswith("_bucket"):
            g["buckets"].append((_le(s.labels["le"], s.lineno), s.value, s.lineno))
        elif s.name.endswith("_sum"):
            g["sum"] = s.value
        else:
            g["count"] = s.value
    for base, g in groups.items():
        where = f"histogram {fam.name}{dict(base)}"
        if g["sum"] is None or g["count"] is None:
            raise ExpositionError(f"{where}: missing _sum or _count")
        b = g["buckets"]
        if not b:
            raise ExpositionError(f"{where}: no buckets")
        les = [x[0] for x in b]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ExpositionError(f"{where}: buckets not in increasing le order")
        if not math.isinf(les[-1]) or les[-1] < 0:
            raise ExpositionError(f'{where}: last bucket is not le="+Inf"')
        vals = [x[1] for x in b]
        for a, c in zip(vals, vals[1:]):
            if c < a:
                raise ExpositionError(f"{where}: buckets not cumulative ({vals})")
        if vals[-1] != g["count"]:
            raise ExpositionError(f"{where}: +Inf bucket {vals[-1]} != _count {g['count']}")
