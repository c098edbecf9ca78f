"""Python dogpile.cache side of the dbm / memcached interop tests (run with /usr/bin/python3).

usage: dogpile_interop.py BACKEND_JSON MODE KEY [ARG]
  BACKEND_JSON  {"name": "dogpile.cache.dbm", "arguments": {...}}
  get KEY       prints json.dumps(value) of region.get(KEY), or NO_VALUE
  set KEY JSON  region.set(KEY, json.loads(JSON))
  hold KEY JSON MARKER SECONDS
                get_or_create(KEY) whose creator touches MARKER, sleeps SECONDS, returns JSON
"""
import json
import os
import sys
import time

from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE


def region_for(spec):
    region = make_region(
        serializer=lambda v: json.dumps(v).encode("utf-8"),
        deserializer=lambda b: json.loads(b),
    )
    region.configure(spec["name"], arguments=spec["arguments"])
    return region


def main():
    spec = json.loads(sys.argv[1])
    mode, key = sys.argv[2], sys.argv[3]
    region = region_for(spec)
    if mode == "get":
        v = region.get(key)
        print("NO_VALUE" if v is NO_VALUE else json.dumps(v, sort_keys=True))
    elif mode == "set":
        region.set(key, json.loads(sys.argv[4]))
    elif mode == "hold":
        value, marker, seconds = json.loads(sys.argv[4]), sys.argv[5], float(sys.argv[6])

        def creator():
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(seconds)
            return value

        print(json.dumps(region.get_or_create(key, creator), sort_keys=True))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
