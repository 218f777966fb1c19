#!/usr/bin/env python3
"""The layer rule of DESIGN.md, checked: a module uses only modules of its own layer or a lower
one; no other top-level module exists; no circle between top-level modules; mio only in
reactor/; libc, socket2 and `unsafe` only in sys/. Root re-exports (`crate::Conn`) count as
the module they come from. Prints every violation and exits 1 if there is any."""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src')
LAYER = {'base': 0, 'error': 1, 'proto': 1, 'sys': 1, 'tls': 1, 'supervise': 1,
         'reactor': 2, 'server': 3, 'client': 3, 'hub': 4, 'metrics': 5}
ONLY = {'mio': {'reactor'}, 'libc': {'sys'}, 'socket2': {'sys'}, 'unsafe': {'sys'}}


def strip(text):
    """Source without comments, string and char literals (so doc links and text don't count)."""
    text = re.sub(r'/\*.*?\*/', ' ', text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text, flags=re.S)
    text = re.sub(r"'(?:\\.|[^'\\])'", "' '", text)
    return re.sub(r'//[^\n]*', '', text)


def module_of(path):
    rel = os.path.relpath(path, SRC).split(os.sep)
    return 'lib' if rel == ['lib.rs'] else rel[0].removesuffix('.rs')


def root_exports(lib):
    """name -> top-level module, from `pub use a::b::{c, d};` lines of lib.rs."""
    out = {}
    for m in re.finditer(r'pub use (\w+)((?:::\w+)*)(?:::\{([^}]*)\}|::(\w+))?\s*;', strip(lib)):
        top = m.group(1)
        names = m.group(3).split(',') if m.group(3) else [m.group(4) or m.group(2).split('::')[-1]]
        for n in names:
            n = n.strip().split(' as ')[-1].strip()
            if n and n != 'self':
                out[n] = top
    return out


def targets(code, exports, me, top_file):
    """Top-level modules a file refers to through crate:: (and super:: from a top-level file)."""
    found = []
    prefixes = r'crate' + (r'|super' if top_file else '')
    for m in re.finditer(r'\b(?:%s)::(\{[^;]*\}|\w+)' % prefixes, code):
        group = m.group(1)
        names = [g.strip().split('::')[0].split(' ')[0] for g in group.strip('{}').split(',')] \
            if group.startswith('{') else [group]
        for n in filter(None, names):
            top = n if n in LAYER else exports.get(n)
            if top is None and n[0].isupper():
                top = '?' + n
            if top and top != me:
                found.append((top, code.count('\n', 0, m.start()) + 1))
    return found


def main():
    errors = []
    lib = open(os.path.join(SRC, 'lib.rs')).read()
    exports = root_exports(lib)
    for entry in sorted(os.listdir(SRC)):
        name = entry.removesuffix('.rs')
        if entry != 'lib.rs' and name not in LAYER:
            errors.append(f'src/{entry}: not a module of the layer table')
    edges = {}
    for dirpath, _, files in os.walk(SRC):
        for f in sorted(files):
            if not f.endswith('.rs'):
                continue
            path = os.path.join(dirpath, f)
            me = module_of(path)
            if me == 'lib':
                continue
            code = strip(open(path).read())
            rel = os.path.relpath(path, os.path.join(SRC, '..'))
            for top, line in targets(code, exports, me, os.path.dirname(path) == os.path.abspath(SRC) or dirpath == SRC):
                if top.startswith('?'):
                    errors.append(f'{rel}:{line}: crate::{top[1:]} is not a known root export')
                    continue
                edges.setdefault(me, set()).add(top)
                if LAYER.get(top, 99) > LAYER[me]:
                    errors.append(f'{rel}:{line}: {me} (layer {LAYER[me]}) uses {top} (layer {LAYER[top]})')
            for word, allowed in ONLY.items():
                if me in allowed:
                    continue
                for m in re.finditer(r'\b%s\b' % word, code):
                    line = code.count('\n', 0, m.start()) + 1
                    errors.append(f'{rel}:{line}: `{word}` outside {"/".join(sorted(allowed))}/')
    # circles between top-level modules
    def cycle_from(start):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None
    seen = set()
    for mod in sorted(edges):
        c = cycle_from(mod)
        if c and frozenset(c) not in seen:
            seen.add(frozenset(c))
            errors.append('import circle: ' + ' -> '.join(c))
    for e in errors:
        print(e)
    print(f'layers: {len(errors)} violation(s)' if errors else 'layers: ok')
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
