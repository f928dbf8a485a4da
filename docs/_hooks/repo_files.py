"""
mkdocs hook: repository files linked from the docs become part of the site; JSON result tables.

A docs page links a repository file outside ``docs/`` by its path relative to the page, as on
GitHub: ``[the page](../results/food_kitchen.md)`` in ``docs/results.md``. mkdocs knows only the
files under ``docs/`` and would report such a link as broken, so this hook

- (``on_files``) adds every repository file that a page links to, and that exists, to the site at
  its repository path (``results/food_kitchen.md`` becomes the page ``results/food_kitchen/``),
  following the added markdown pages too, so a results page brings its plots;
- (``on_page_markdown``) rewrites those links to the file's place in the site;
- (``on_page_markdown``) replaces each ``<!-- json-table ... -->`` block by a table read from a
  JSON result file at build time, so that no measured number is typed into the docs by hand.

A link to a file that does not exist is not touched here: it stays as written and unknown to
mkdocs, whose ``--strict`` build then fails on it. Links inside code (fenced blocks, code spans) are not
links and are left alone.

A ``json-table`` block is YAML inside an HTML comment (invisible on GitHub: put a link to the
JSON file beside it)::

    <!-- json-table
    file: ../results/speed_food_kitchen_cpu.json     # relative to the page, as a link
    rows: [official, runs]    # dotted paths: a list of rows, a dict of rows (key = `_key`), one dict;
                              # '' or absent: the whole file is one row
    columns:                  # header: key path[:format]; 'a|b' the first present; 'x?' may be absent
      code: model|_key
      training step (s): step_s_median|batch_s_median:.3f
      GFLOP / step: step_gflop?:.1f
    -->

A missing file or key stops the build with an error naming the page, the file and the key.
"""

import json
import os
import posixpath
import re
from urllib.parse import unquote

import yaml
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

#: an inline link or image ``[text](target "title")``, and a reference definition ``[id]: target``
_INLINE = re.compile(r'(!?\[[^\]\n]*\]\()(<[^>\n]+>|[^)\s]+)')
_REFDEF = re.compile(r'^( {0,3}\[[^\]\n]+\]:[ \t]*)(<[^>\n]+>|\S+)', re.M)
_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
_CODE_SPAN = re.compile(r'(`+)(?:.|\n)+?(?<!`)\1(?!`)')
_JSON_TABLE = re.compile(r'^<!-- json-table[ \t]*\n(.*?)\n-->[ \t]*$', re.M | re.S)
_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')

_state = {'root': None, 'docs': None, 'mounted': set()}


# ---------------------------------------------------------------------------------------------
# links

def _fence_parts(markdown):
    """``(is_text, chunk)`` pieces of ``markdown``: fenced code blocks are not text."""
    out, buf, fence = [], [], None
    for line in markdown.splitlines(keepends=True):
        m = _FENCE.match(line)
        if fence is None and m:
            out.append((True, ''.join(buf)))
            buf, fence = [line], m.group(1)
        elif fence is not None:
            buf.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                out.append((False, ''.join(buf)))
                buf, fence = [], None
        else:
            buf.append(line)
    out.append((fence is None, ''.join(buf)))
    return out


def _text_parts(markdown):
    """``(is_text, chunk)`` pieces of ``markdown``: fenced code blocks and code spans are not text."""
    pieces = []
    for is_text, chunk in _fence_parts(markdown):
        if not is_text:
            pieces.append((False, chunk))
            continue
        pos = 0
        for m in _CODE_SPAN.finditer(chunk):
            pieces.append((True, chunk[pos:m.start()]))
            pieces.append((False, m.group(0)))
            pos = m.end()
        pieces.append((True, chunk[pos:]))
    return pieces


def _map_links(markdown, fn):
    """``markdown`` with every link target outside code replaced by ``fn(target)`` (None: kept)."""
    def sub(m):
        raw = m.group(2)
        target = raw[1:-1] if raw.startswith('<') else raw
        new = fn(target)
        if new is None:
            return m.group(0)
        return m.group(1) + (f'<{new}>' if raw.startswith('<') else new)
    return ''.join(_REFDEF.sub(sub, _INLINE.sub(sub, chunk)) if is_text else chunk
                   for is_text, chunk in _text_parts(markdown))


def _split(target):
    """``(path, rest)`` of a relative link (``rest``: its ``?query#anchor``), None for others."""
    if _SCHEME.match(target) or target.startswith(('#', '/', '\\')):
        return None
    m = re.match(r'([^?#]*)(.*)', target)
    return (unquote(m.group(1)), m.group(2)) if m.group(1) else None


def _repo_path(page_repo_dir, path):
    """The repository path a relative link points to, or None when it leaves the repository."""
    p = posixpath.normpath(posixpath.join(page_repo_dir, path))
    return None if p == '..' or p.startswith('../') else p


def _in_docs(repo_path):
    docs = _state['docs']
    return docs == '.' or repo_path == docs or repo_path.startswith(docs + '/')


def _site_uri(repo_path):
    """Where a repository file is in the site: docs files by their path in docs/, others as is."""
    docs = _state['docs']
    return repo_path if docs == '.' or not _in_docs(repo_path) else posixpath.relpath(repo_path, docs)


def _page_repo_path(src_uri):
    return src_uri if src_uri in _state['mounted'] else posixpath.normpath(posixpath.join(_state['docs'], src_uri))


def on_config(config):
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    docs = os.path.relpath(os.path.abspath(config.docs_dir), root).replace(os.sep, '/')
    if docs.startswith('..'):
        raise PluginError(f'repo_files hook: docs_dir {config.docs_dir} is not inside {root}')
    _state.update(root=root, docs=docs, mounted=set())
    return config


def on_files(files, config):
    """Add the repository files that the pages link to (transitively through added pages)."""
    root = _state['root']
    queue = [(f.src_uri, f.abs_src_path) for f in files.documentation_pages()]
    while queue:
        src_uri, abs_path = queue.pop()
        page_dir = posixpath.dirname(_page_repo_path(src_uri))
        with open(abs_path, encoding='utf-8') as fh:
            text = fh.read()
        found = []

        def collect(target):
            parts = _split(target)
            repo = parts and _repo_path(page_dir, parts[0])
            if repo and not _in_docs(repo):
                found.append(repo)
        _map_links(text, collect)
        for repo in found:
            abs_target = os.path.join(root, *repo.split('/'))
            if repo in _state['mounted'] or not os.path.isfile(abs_target):
                continue                      # a missing file stays unknown: mkdocs reports the link
            new = File(repo, root, config.site_dir, config.use_directory_urls)
            clash = files.get_file_from_path(repo) or next((f for f in files if f.dest_uri == new.dest_uri), None)
            if clash is not None:
                raise PluginError(f'{src_uri} links to {repo}, which would be {new.dest_uri} in the site, as '
                                  f'{clash.src_uri} of the docs already is: link that docs page instead')
            files.append(new)
            _state['mounted'].add(repo)
            if repo.endswith('.md'):
                queue.append((repo, abs_target))
    return files


def _rewrite_links(markdown, src_uri):
    page_repo = _page_repo_path(src_uri)
    page_repo_dir, page_site_dir = posixpath.dirname(page_repo), posixpath.dirname(src_uri)

    def fn(target):
        parts = _split(target)
        repo = parts and _repo_path(page_repo_dir, parts[0])
        if not repo:
            return None
        if not (_in_docs(repo) or repo in _state['mounted']):
            return None                       # a missing file: mkdocs reports the link as written
        site = _site_uri(repo)
        if posixpath.normpath(posixpath.join(page_site_dir, parts[0])) == site:
            return None                       # already right in the site (links within docs/)
        return posixpath.relpath(site, page_site_dir or '.') + parts[1]
    return _map_links(markdown, fn)


# ---------------------------------------------------------------------------------------------
# JSON tables

def _get(obj, path, where):
    cur = obj
    for key in path.split('.') if path else []:
        if isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        elif isinstance(cur, dict) and key in cur:
            cur = cur[key]
        else:
            raise KeyError(f'{where}: no key {path!r}')
    return cur


def _rows(data, paths, where):
    out = []
    for path in paths:
        value = _get(data, path, where)
        if isinstance(value, list):
            out += [(str(i), r) for i, r in enumerate(value)]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out += list(value.items())
        elif isinstance(value, dict):
            out.append((path.rsplit('.', 1)[-1], value))
        else:
            raise KeyError(f'{where}: {path!r} is neither a list nor a dict of rows')
    return out


def _cell(key, row, source, where):
    """One cell: the first present, non-null alternative of ``source`` formatted ('–' when null)."""
    path, _, spec = source.partition(':')
    required = []
    for alt in path.split('|'):
        name = alt.rstrip('?')
        try:
            value = key if name == '_key' else _get(row, name, where)
        except KeyError:
            if not alt.endswith('?'):
                required.append(name)
            continue
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        return ', '.join(format(v, spec) if spec else str(v) for v in values).replace('|', '\\|')
    if required and len(required) == len(path.split('|')):
        raise KeyError(f'{where}: row {key!r} has no key {path!r}')
    return '–'


def json_table(spec_text, page_repo_dir, root, page):
    """The markdown table a ``json-table`` block describes (KeyError / OSError on a bad block)."""
    spec = yaml.safe_load(spec_text)
    if not isinstance(spec, dict) or 'file' not in spec or not isinstance(spec.get('columns'), dict):
        raise KeyError(f'{page}: a json-table needs file and columns (a mapping header: key path)')
    repo = _repo_path(page_repo_dir, spec['file'])
    if repo is None:
        raise KeyError(f"{page}: json-table file {spec['file']} is outside the repository")
    where = f"{page}, {repo}"
    with open(os.path.join(root, *repo.split('/')), encoding='utf-8') as fh:
        data = json.load(fh)
    rows = spec.get('rows') or ''
    rows = _rows(data, rows if isinstance(rows, list) else [rows], where) if rows else [('', data)]
    cols = spec['columns']
    lines = ['| ' + ' | '.join(str(c) for c in cols) + ' |', '|' + '|'.join(
        '---' if i == 0 else '---:' for i in range(len(cols))) + '|']
    for key, row in rows:
        lines.append('| ' + ' | '.join(_cell(key, row, str(src), where) for src in cols.values()) + ' |')
    return '\n'.join(lines)


def _render_tables(markdown, src_uri):
    page_repo_dir = posixpath.dirname(_page_repo_path(src_uri))

    def sub(m):
        try:
            return json_table(m.group(1), page_repo_dir, _state['root'], src_uri)
        except (KeyError, OSError, ValueError, yaml.YAMLError) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise PluginError(f'json-table in {src_uri}: {why}') from e
    return ''.join(_JSON_TABLE.sub(sub, chunk) if is_text else chunk for is_text, chunk in _fence_parts(markdown))


def on_page_markdown(markdown, page, config, files):
    return _rewrite_links(_render_tables(markdown, page.file.src_uri), page.file.src_uri)
