"""python-diskcache side of the dogpile-cpp interop tests (run by test_interop.cpp).

usage: interop.py MODE DIR
  write-cache   write the shared data set with diskcache.Cache
  read-cache    verify the data set C++ wrote (and that check() is clean)
  write-fanout  write the fanout data set with diskcache.FanoutCache(shards=4)
  read-fanout   verify the fanout data set C++ wrote, including the shard of every key
  pull-queue    pull the queue C++ pushed and print the values
Exit status 0 on success; mismatches are printed to stderr.
"""
import sys
import warnings

import json
import diskcache

BIG_STR = '\u00e9' * 40000                    # 40000 characters, 80000 UTF-8 bytes: a TEXT file
BIG_BYTES = bytes(range(256)) * 200           # 51200 bytes: a BINARY file


def dataset():
    return {
        1: 2,
        -7: 'neg',
        1.5: 2.25,
        'str': 'text \u00fcn\u00efcode',
        b'bytes': b'\x00\x01\xff',
        'big-str': BIG_STR,
        'big-bytes': BIG_BYTES,
        'int64-max': 2**63 - 1,
        'empty-bytes': b'',
        'empty-str': '',
    }


def fanout_dataset():
    data = {}
    for i in range(50):
        data[i] = i * i
        data['k%d' % i] = 'v%d' % i
        data[('b%d' % i).encode()] = ('bv%d' % i).encode()
        data[i + 0.5] = float(i)
    data[-12345] = 'negative'
    data['fanout-big'] = BIG_BYTES
    return data


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def verify(cache, data):
    for key, want in data.items():
        got = cache.get(key, default=KeyError)
        if got is KeyError:
            fail('missing key %r' % (key,))
        if type(got) is not type(want) or got != want:
            fail('key %r: got %r (%s), want %r (%s)' % (
                key, got if len(repr(got)) < 80 else repr(got)[:80], type(got).__name__,
                want if len(repr(want)) < 80 else repr(want)[:80], type(want).__name__))


def check_clean(cache):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        problems = cache.check()
    if problems:
        fail('check() found: %r' % (problems,))


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == 'write-cache':
        with diskcache.Cache(directory) as cache:
            for key, value in dataset().items():
                cache.set(key, value)
            cache.set('pickled', (1, 2))
            cache.set('tagged', 'v', expire=3600, tag='mytag')
            cache.push('job1', prefix='jobs')
            cache.push('job2', prefix='jobs')
    elif mode == 'read-cache':
        with diskcache.Cache(directory) as cache:
            verify(cache, dataset())
            value, expire_time, tag = cache.get('tagged', expire_time=True, tag=True)
            if value != 'v' or tag != 'mytag' or expire_time is None:
                fail('tagged: %r %r %r' % (value, expire_time, tag))
            if cache.get('codec') != b'{"a":[1,2,3]}':
                fail('codec value should be JSON bytes, got %r' % (cache.get('codec'),))
            check_clean(cache)
    elif mode == 'write-fanout':
        with diskcache.FanoutCache(directory, shards=4) as cache:
            for key, value in fanout_dataset().items():
                if not cache.set(key, value, retry=True):
                    fail('set timed out')
    elif mode == 'read-fanout':
        with diskcache.FanoutCache(directory, shards=4) as cache:
            verify(cache, fanout_dataset())
            for key in fanout_dataset():
                shard = cache._shards[cache._shards[0].disk.hash(key) % 4]
                if key not in shard:
                    fail('key %r is not in the shard python routes it to' % (key,))
            check_clean(cache)
    elif mode == 'pull-queue':
        with diskcache.Cache(directory) as cache:
            out = []
            while True:
                key, value = cache.pull()
                if key is None:
                    break
                out.append('%s=%s' % (key, value))
            print(','.join(out))
    elif mode == 'memoize-keys':
        # The key a C++ Memoized uses for name(args...), computed the documented way
        # (docs/disk.md, "memoize and Python"), so Python can fill or read C++ results.
        def cpp_memo_key(name, *args):
            return json.dumps([name, *args], separators=(',', ':'), ensure_ascii=False)
        with diskcache.Cache(directory) as cache:
            cache[cpp_memo_key('square', 12)] = 1000  # "computed" by Python
            print(cache.get(cpp_memo_key('greet', 'Zo\u00e9', 2)))
    else:
        fail('unknown mode ' + mode)


if __name__ == '__main__':
    main()
