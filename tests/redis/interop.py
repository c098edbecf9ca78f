"""Python dogpile.cache (Debian's python3-dogpile.cache + python3-redis) on the same Redis as
the C++ tests, with a JSON serializer: the region configuration a mixed fleet uses.

usage: interop.py PORT MODE KEY [ARG]
  read KEY          print json.dumps(region.get(KEY)) ("null" for a miss)
  read_or_error KEY as read, but print the exception's type name if the value cannot be read
  write KEY JSON    region.set(KEY, json.loads(JSON))
  hold KEY SECONDS  get_or_create(KEY) whose creator prints "creating", sleeps SECONDS and
                    returns "from python"; prints the value it got
  fresh KEY SECONDS [KEY SECONDS ...]
                    for each pair, print json.dumps(region.get(KEY, expiration_time=SECONDS)),
                    or "expired" when dogpile.cache judges it older than SECONDS
"""
import json
import sys
import time

from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE

port, mode, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
region = make_region(
    serializer=lambda v: json.dumps(v).encode(),
    deserializer=lambda b: json.loads(b),
).configure(
    "dogpile.cache.redis",
    expiration_time=3600,
    arguments={
        "host": "127.0.0.1",
        "port": port,
        "distributed_lock": True,
        "lock_timeout": 30,
        "thread_local_lock": False,
    },
)

if mode == "read":
    v = region.get(key)
    print(json.dumps(None if v is NO_VALUE else v))
elif mode == "read_or_error":
    try:
        v = region.get(key)
        print(json.dumps(None if v is NO_VALUE else v))
    except ValueError as e:  # json.JSONDecodeError
        print(type(e).__name__)
elif mode == "write":
    region.set(key, json.loads(sys.argv[4]))
elif mode == "hold":
    def create():
        print("creating", flush=True)
        time.sleep(float(sys.argv[4]))
        return "from python"

    print(json.dumps(region.get_or_create(key, create)), flush=True)
elif mode == "fresh":
    pairs = sys.argv[3:]
    for k, seconds in zip(pairs[::2], pairs[1::2]):
        v = region.get(k, expiration_time=float(seconds))
        print("expired" if v is NO_VALUE else json.dumps(v))
else:
    sys.exit("unknown mode " + mode)
