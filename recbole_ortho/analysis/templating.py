"""
recbole_ortho.analysis.templating
#################################

A small, strict templating for results pages: every number of a page is a placeholder filled in
from values computed over the run stores (:mod:`recbole_ortho.analysis.pages`).

- ``{{ key }}`` or ``{{ key:spec }}``: the value of ``key`` formatted with the Python format spec
  ``spec`` (``{{ abxi.base.A.ndcg10:.4f }}``, ``{{ h200.ABXI.params:, }}``, ``{{ x:+.3f }}``);
- a line holding only ``{# ... #}`` is a comment and is dropped;
- a key that is missing, a value that is ``None``, NaN or infinite, a spec that does not fit the
  value, or a stray ``{{`` / ``}}`` is a :class:`TemplateError` naming the template and its line:
  a page never gets a silently blank or wrong number;
- :class:`Span` is a range ``lo–hi`` (one number when both ends format the same, ``lo to hi``
  when a formatted end carries a sign).
"""

import math
import numbers
import re

PLACEHOLDER = re.compile(r'\{\{\s*(?P<key>[A-Za-z0-9_.@/\-]+)\s*(?::(?P<spec>[^{}]*?))?\s*\}\}')
COMMENT = re.compile(r'^\s*\{#.*#\}\s*$')


class TemplateError(ValueError):
    """A template that cannot be filled: the message names the template, the line and the key."""


class Span:
    """A range of values formatted as ``lo–hi`` with one format spec for both ends."""

    def __init__(self, values):
        vals = list(values)
        if not vals:
            raise ValueError('Span of no values')
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in vals):
            vals = [float(v) for v in vals]
        self.lo, self.hi = min(vals), max(vals)

    def __format__(self, spec):
        lo, hi = format(self.lo, spec), format(self.hi, spec)
        if lo == hi:
            return lo
        sep = ' to ' if lo[:1] in '+-' or hi[:1] in '+-' else '–'
        return f'{lo}{sep}{hi}'

    def finite(self):
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def __eq__(self, other):
        return isinstance(other, Span) and (self.lo, self.hi) == (other.lo, other.hi)

    def __repr__(self):
        return f'Span({self.lo!r}, {self.hi!r})'


def _bad(value):
    """Why ``value`` may not be put on a page (None when it may)."""
    if value is None:
        return 'is None'
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real) and not math.isfinite(float(value)):
        return f'is {value}'
    if isinstance(value, Span) and not value.finite():
        return f'is {value!r}'
    if isinstance(value, (dict, list, tuple, set)):
        return f'is a {type(value).__name__}, not a value'
    return None


def render(text, values, source='template'):
    """Fill every placeholder of ``text`` from ``values`` (a dict); ``source`` names the template in
    errors (``source:line: ...``)."""
    out = []
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if COMMENT.match(line):
            continue

        def fill(m, lineno=lineno):
            key, spec = m.group('key'), m.group('spec') or ''
            if key not in values:
                near = sorted(k for k in values if k.rsplit('.', 1)[0] == key.rsplit('.', 1)[0])[:8]
                raise TemplateError(f'{source}:{lineno}: unknown key {key!r}' +
                                    (f' (keys beside it: {", ".join(near)})' if near else ''))
            v = values[key]
            why = _bad(v)
            if why:
                raise TemplateError(f'{source}:{lineno}: {key!r} {why}')
            try:
                return format(v, spec)
            except (ValueError, TypeError) as e:
                raise TemplateError(f'{source}:{lineno}: {key!r} = {v!r} with format {spec!r}: {e}') from None

        filled = PLACEHOLDER.sub(fill, line)
        rest = PLACEHOLDER.sub('', line)
        if '{{' in rest or '}}' in rest:
            raise TemplateError(f'{source}:{lineno}: malformed placeholder in {line.strip()!r}')
        out.append(filled)
    return ''.join(out)
