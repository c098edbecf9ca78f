"""python-diskcache side of the Deque/Index interop tests (run by test_interop.cpp).

usage: interop_persistent.py MODE DIR
  write-deque   build the deque data set with diskcache.Deque (append, appendleft, a big item)
  read-deque    verify the deque data set C++ wrote, in order
  write-index   build the index data set with diskcache.Index (an overwritten key, a re-added key)
  read-index    verify the index data set C++ wrote, in order
  append-deque  append 'py' to the deque and print the whole deque as a repr
  append-many   append 'py-0' … 'py-299' one by one (run while C++ appends too)
Exit status 0 on success; mismatches are printed to stderr.
"""
import sys
import time

import diskcache

BIG_BYTES = bytes(range(256)) * 200  # 51200 bytes: stored in a value file

# The same items as test_interop.cpp's C++ side builds.
DEQUE_ITEMS = [-1, 'zero', 1, 2.5, 'three', b'four', BIG_BYTES]
INDEX_ITEMS = [('a', 10), (2, 'two'), (3.5, b'bytes'), (b'k', 4.25), ('big', BIG_BYTES),
               ('gone', 'back')]


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def same(got, want, what):
    if len(got) != len(want) or any(
            type(g) is not type(w) or g != w for g, w in zip(got, want)):
        fail('%s: got %r, want %r' % (what, [repr(g)[:40] for g in got],
                                      [repr(w)[:40] for w in want]))


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == 'write-deque':
        deque = diskcache.Deque(directory=directory)
        deque.extend([1, 2.5, 'three', b'four', BIG_BYTES])
        deque.appendleft('zero')
        deque.appendleft(-1)
    elif mode == 'read-deque':
        deque = diskcache.Deque(directory=directory)
        same(list(deque), DEQUE_ITEMS, 'deque')
        same(list(reversed(deque)), DEQUE_ITEMS[::-1], 'reversed deque')
        if deque.peekleft() != -1 or deque.peek() != BIG_BYTES:
            fail('deque ends: %r %r' % (deque.peekleft(), deque.peek()[:10]))
    elif mode == 'append-deque':
        deque = diskcache.Deque(directory=directory)
        deque.append('py')
        print(repr(list(deque)))
    elif mode == 'append-many':
        deque = diskcache.Deque(directory=directory)
        deque.append('py-0')
        # Wait (up to 10 s) for the C++ writer's next append before going on, so the two
        # writers overlap in every run: a burst of 300 appends can otherwise finish while the
        # C++ side sleeps in SQLite's busy handler (seen under ASan).
        seen = len(deque)
        deadline = time.monotonic() + 10
        while len(deque) == seen and time.monotonic() < deadline:
            time.sleep(0.001)
        for i in range(1, 300):
            deque.append('py-%d' % i)
    elif mode == 'write-index':
        index = diskcache.Index(directory)
        index['a'] = 1
        index[2] = 'two'
        index['gone'] = 'first'
        index[3.5] = b'bytes'
        index[b'k'] = 4.25
        index['big'] = BIG_BYTES
        index['a'] = 10         # overwritten: keeps its position
        del index['gone']
        index['gone'] = 'back'  # re-added: goes last
    elif mode == 'read-index':
        index = diskcache.Index(directory)
        same(list(index.items()), INDEX_ITEMS, 'index items')
        same(list(index), [k for k, _ in INDEX_ITEMS], 'index keys')
        same(list(index.values()), [v for _, v in INDEX_ITEMS], 'index values')
        same(list(reversed(index)), [k for k, _ in INDEX_ITEMS][::-1], 'reversed index')
        if index.peekitem() != ('gone', 'back'):
            fail('peekitem: %r' % (index.peekitem(),))
    else:
        fail('unknown mode ' + mode)


if __name__ == '__main__':
    main()
