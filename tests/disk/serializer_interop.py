"""python-diskcache side of tests/disk/test_serializer.cpp.

usage: serializer_interop.py DOCS MODE DIR
  DOCS is docs/disk.md: the Disk subclasses the docs give Python users (the ```python block of
  "## Value serialization" that defines JSONValueDisk and ZlibValueDisk) are run from there, so
  the documented code is the tested code.
  json-write / json-read   the JSON data set through JSONValueDisk
  zlib-write / zlib-read   the zlib data set through ZlibValueDisk (and raw-layout checks)
  jsondisk-write           values through Python's own diskcache.JSONDisk (keys encoded too)
Exit status 0 on success; mismatches are printed to stderr.
"""
import re
import sys

import diskcache

BIG_STR = '\u00e9' * 40000
BIG_BYTES = bytes(range(256)) * 200


def json_dataset():
    return {
        'int': 42, 'neg': -7, 'float': 1.5, 'str': 'text \u00fcn\u00efcode', 'big': BIG_STR,
        'obj': {'a': [1, 2, 3], 'b': 'x'}, 'list': [1, 'two', 3.5], 'true': True, 'null': None,
        'int64-max': 2**63 - 1,
    }


def zlib_dataset():
    return {
        'int': 42, 'float': 1.5, 'small-str': 'abc', 'small-bytes': b'\x00\x01',
        'big-str': BIG_STR, 'big-bytes': BIG_BYTES, 'magic-bytes': b'\x89DPZ!',
    }


def load_disks(docs):
    text = open(docs, encoding='utf-8').read()
    section = text.split('## Value serialization', 1)[1]
    for block in re.findall(r'```python\n(.*?)```', section, re.S):
        if 'class JSONValueDisk' in block:
            scope = {}
            exec(block, scope)
            return scope['JSONValueDisk'], scope['ZlibValueDisk']
    raise SystemExit('docs/disk.md: no python block defining JSONValueDisk')


def verify(cache, expected):
    bad = 0
    for k, v in expected.items():
        got = cache.get(k, default='<missing>')
        if got != v or type(got) is not type(v):
            print('key %r: got %r, want %r' % (k, str(got)[:60], str(v)[:60]), file=sys.stderr)
            bad += 1
    return bad


def main():
    docs, mode, path = sys.argv[1:4]
    json_disk, zlib_disk = load_disks(docs)
    if mode == 'json-write':
        with diskcache.Cache(path, disk=json_disk) as c:
            for k, v in json_dataset().items():
                c[k] = v
        return 0
    if mode == 'json-read':
        with diskcache.Cache(path, disk=json_disk) as c:
            return 1 if verify(c, json_dataset()) else 0
    if mode == 'zlib-write':
        with diskcache.Cache(path, disk=zlib_disk) as c:
            for k, v in zlib_dataset().items():
                c[k] = v
        return 0
    if mode == 'zlib-read':
        bad = 0
        with diskcache.Cache(path, disk=zlib_disk) as c:
            bad += verify(c, zlib_dataset())
        with diskcache.Cache(path) as c:  # the layout: small values plain, large ones wrapped
            bad += verify(c, {'int': 42, 'float': 1.5, 'small-str': 'abc', 'small-bytes': b'\x00\x01'})
            for k in ('big-str', 'big-bytes', 'magic-bytes'):
                if not c[k].startswith(b'\x89DPZ'):
                    print('key %r is not wrapped' % k, file=sys.stderr)
                    bad += 1
        return 1 if bad else 0
    if mode == 'jsondisk-write':
        with diskcache.Cache(path, disk=diskcache.JSONDisk) as c:
            c['a'] = {'x': [1, 2]}
            c['b'] = 'text'
        return 0
    raise SystemExit('unknown mode ' + mode)


if __name__ == '__main__':
    sys.exit(main())
