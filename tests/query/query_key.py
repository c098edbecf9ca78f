#!/usr/bin/python3
"""Reference implementation of dogpile::query's key (docs/query.md "Keys"), in Python.

Usage: query_key.py NAMESPACE GENERATION EXTRA SQL PARAM...
where each PARAM is N (NULL), b0/b1, i<int>, d<float>, t<text>, x<hex bytes>.
Prints dq:<namespace>:<generation>:<sha1hex(canonical)>, or dq:<namespace>:<sha1hex(canonical)>
when GENERATION is empty (a cached query's key; relationships key by a generation).
"""
import hashlib
import struct
import sys


def enc(p):
    tag, body = p[0], p[1:]
    if tag == "N":
        return b"N"
    if tag == "b":
        return b"b" + body.encode()
    if tag == "i":
        return b"i" + str(int(body)).encode() + b";"
    if tag == "d":
        v = float(body)
        bits = "7ff8000000000000" if v != v else struct.pack(">d", v).hex()
        return b"d" + bits.encode()
    data = body.encode() if tag == "t" else bytes.fromhex(body)
    return tag.encode() + str(len(data)).encode() + b":" + data


def canonical(sql, params, extra):
    s, e = sql.encode(), extra.encode()
    out = b"dq1\n" + b"s" + str(len(s)).encode() + b":" + s
    out += b"".join(enc(p) for p in params)
    return out + b"e" + str(len(e)).encode() + b":" + e


ns, gen, extra, sql, *params = sys.argv[1:]
digest = hashlib.sha1(canonical(sql, params, extra)).hexdigest()
print("dq:%s:%s%s" % (ns, gen + ":" if gen else "", digest))
