#!/usr/bin/env bash
# Tests of tools/dogpile-disk on real DiskCache and FanoutCache directories written by
# python-diskcache: outputs, cross-reads with Python, and exit codes.
# usage: test_dogpile_disk.sh /path/to/dogpile-disk /usr/bin/python3
set -u
TOOL=$1
PY=$2
TMP=$(mktemp -d /tmp/dogpile-disk-tool.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
FAILS=0
LAST=

fail() {
  echo "FAIL: $* [after: ${LAST#"$TOOL "}]" >&2
  FAILS=$((FAILS + 1))
}
# expect RC CMD...: runs CMD, stdout to $TMP/out, stderr to $TMP/err; checks the exit code.
expect() {
  local want=$1
  shift
  LAST="$*"
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    fail "'$*' exited $rc, expected $want; stderr: $(head -c 300 "$TMP/err")"
  fi
}
out_is() { [ "$(cat "$TMP/out")" == "$1" ] || fail "output '$(head -c 300 "$TMP/out")' != '$1'"; }
out_has() { grep -qxF -- "$1" "$TMP/out" || fail "output lacks line '$1': $(head -c 500 "$TMP/out")"; }
err_has() { grep -qF -- "$1" "$TMP/err" || fail "stderr lacks '$1': $(head -c 300 "$TMP/err")"; }

"$PY" - "$TMP" <<'EOF' || { echo "python3-diskcache setup failed" >&2; exit 1; }
import sys, diskcache
d = sys.argv[1]
c = diskcache.Cache(d + '/dc')
c.set('text', 'hello'); c.set(b'bin', b'\x00\x01'); c.set(7, 42); c.set(1.5, 2.25)
for i in range(20):
    c.set('t%d' % i, 'v', tag='grp')
c.reset('cull_limit', 0)          # keep the expired row (set culls expired rows otherwise)
c.set('gone', 'x', expire=-10)
c.reset('cull_limit', 10)
c.close()
f = diskcache.FanoutCache(d + '/fc', shards=4)
for i in range(50):
    f.set('k%d' % i, 'v%d' % i, tag='even' if i % 2 == 0 else 'odd')
f.reset('cull_limit', 0)
f.set('gone', 'x', expire=-10)
f.reset('cull_limit', 10)
f.close()
p = diskcache.Cache(d + '/pickled')
p.set('tuple', (1, 2))
p.close()
EOF

# ---- usage ----------------------------------------------------------------------------------
expect 0 "$TOOL" --help
grep -q "usage: dogpile-disk DIR" "$TMP/out" || fail "--help prints no usage"
expect 0 "$TOOL" --version
grep -Eq "^dogpile-disk [0-9]+\.[0-9]+\.[0-9]+ .*SQLite 3\." "$TMP/out" || fail "--version prints no version"
expect 2 "$TOOL"
expect 2 "$TOOL" "$TMP/dc"
expect 2 "$TOOL" "$TMP/dc" frobnicate
expect 2 "$TOOL" "$TMP/dc" get
expect 2 "$TOOL" "$TMP/dc" set onlykey
expect 2 "$TOOL" "$TMP/dc" stats --bogus
expect 2 "$TOOL" "$TMP/dc" stats --fix
expect 2 "$TOOL" "$TMP/dc" get 7x --key-type int
expect 2 "$TOOL" "$TMP/dc" get k --key-type complex
# std::stod reads these; none is a number of seconds (fuzz_disk_cli_args found nan and inf).
for e in nan NAN inf -inf infinity -1 1e400 1.5x; do
  expect 2 "$TOOL" "$TMP/dc" set k v --expire "$e"
  err_has "--expire needs a non-negative number of seconds, got '$e'"
done

# ---- not a cache / corrupt --------------------------------------------------------------------
expect 3 "$TOOL" "$TMP/nonexistent" stats
err_has "not a directory"
mkdir "$TMP/empty"
expect 3 "$TOOL" "$TMP/empty" stats
err_has "not a disk cache directory"
[ -e "$TMP/empty/cache.db" ] && fail "the tool created a cache in a non-cache directory"
mkdir "$TMP/corrupt"
head -c 8192 /dev/urandom >"$TMP/corrupt/cache.db"
expect 3 "$TOOL" "$TMP/corrupt" stats
expect 3 "$TOOL" "$TMP/corrupt" check

# ---- DiskCache ------------------------------------------------------------------------------
expect 0 "$TOOL" "$TMP/dc" stats
out_has "type: DiskCache"
out_has "shards: 1"
out_has "count: 25"
out_has "eviction_policy: least-recently-stored"
out_has "statistics: 0"
expect 0 "$TOOL" "$TMP/dc" keys
out_has "'text'"
out_has "b'bin'"
out_has "7"
out_has "1.5"
[ "$(wc -l <"$TMP/out")" -eq 25 ] || fail "keys: expected 25 lines"

expect 0 "$TOOL" "$TMP/dc" get text
out_is "hello"
expect 0 "$TOOL" "$TMP/dc" get bin --key-type bytes
[ "$(od -An -tx1 "$TMP/out" | tr -d ' \n')" == "0001" ] || fail "bytes value not raw"
expect 0 "$TOOL" "$TMP/dc" get 7 --key-type int
out_is "42"
expect 0 "$TOOL" "$TMP/dc" get 1.5 --key-type float
out_is "2.25"
expect 1 "$TOOL" "$TMP/dc" get missing
err_has "not found"
expect 1 "$TOOL" "$TMP/dc" get gone # expired
expect 1 "$TOOL" "$TMP/dc" get 7 # the text key '7' is not the int key 7

# Before any write: a set culls expired rows (cull_limit) and would remove 'gone' itself.
expect 0 "$TOOL" "$TMP/dc" expire
out_is "1"
expect 0 "$TOOL" "$TMP/dc" expire
out_is "0"
expect 0 "$TOOL" "$TMP/dc" set newkey "new value"
expect 0 "$TOOL" "$TMP/dc" set --value-type int n 5
expect 0 "$TOOL" "$TMP/dc" set tagged x --tag later --expire 3600
expect 0 "$TOOL" "$TMP/dc" get newkey
out_is "new value"
"$PY" -c '
import sys, diskcache
c = diskcache.Cache(sys.argv[1])
assert c["newkey"] == "new value", c["newkey"]
assert c["n"] == 5 and isinstance(c["n"], int), repr(c["n"])
v, exp, tag = c.get("tagged", expire_time=True, tag=True)
assert v == "x" and tag == "later" and exp is not None, (v, exp, tag)
' "$TMP/dc" || fail "python cannot read what the tool set"

expect 0 "$TOOL" "$TMP/dc" evict grp
out_is "20"
expect 0 "$TOOL" "$TMP/dc" stats
out_has "count: 7"

expect 0 "$TOOL" "$TMP/dc" check
out_is "ok"
mkdir -p "$TMP/dc/ab/cd"
echo junk >"$TMP/dc/ab/cd/0123456789abcdef0123456789ab.val"
expect 4 "$TOOL" "$TMP/dc" check
grep -q "unknown_file" "$TMP/out" || fail "check does not report the unknown file"
expect 0 "$TOOL" "$TMP/dc" check --fix
grep -q "^fixed " "$TMP/out" || fail "check --fix reports nothing fixed"
expect 0 "$TOOL" "$TMP/dc" check
out_is "ok"
[ -e "$TMP/dc/ab/cd/0123456789abcdef0123456789ab.val" ] && fail "check --fix left the unknown file"

# A value file Python wrote is read (its name is of the layout we accept); a row whose filename
# was tampered to point outside the cache is a miss and a check finding, and the outside file
# is neither read nor deleted.
"$PY" -c '
import sys, diskcache
c = diskcache.Cache(sys.argv[1])
c.set("big", b"b" * 40000)
' "$TMP/dc" || fail "python could not write a file value"
expect 0 "$TOOL" "$TMP/dc" get big --raw
[ "$(wc -c <"$TMP/out")" -eq 40000 ] || fail "the tool does not read the value file python wrote"
mkdir -p "$TMP/outside"
echo secret >"$TMP/outside/secret.txt"
"$PY" -c '
import sqlite3, sys
db = sqlite3.connect(sys.argv[1] + "/cache.db")
db.execute("UPDATE Cache SET filename = ? WHERE key = ?", ("../outside/secret.txt", "big"))
db.commit()
' "$TMP/dc" || fail "could not tamper the database"
expect 1 "$TOOL" "$TMP/dc" get big
grep -q secret "$TMP/out" && fail "get read a file outside the cache"
expect 4 "$TOOL" "$TMP/dc" check
grep -q "bad_filename" "$TMP/out" || fail "check does not report the tampered filename"
expect 0 "$TOOL" "$TMP/dc" check --fix
expect 0 "$TOOL" "$TMP/dc" check
out_is "ok"
[ "$(cat "$TMP/outside/secret.txt" 2>/dev/null)" == "secret" ] || fail "the outside file was touched"

expect 0 "$TOOL" "$TMP/dc" cull
out_is "0"
expect 0 "$TOOL" "$TMP/dc" clear
out_is "7"
expect 0 "$TOOL" "$TMP/dc" stats
out_has "count: 0"
"$PY" -c 'import sys, diskcache; assert len(diskcache.Cache(sys.argv[1])) == 0' "$TMP/dc" ||
  fail "python still sees items after clear"

expect 3 "$TOOL" "$TMP/pickled" get tuple
err_has "tuple"

# ---- FanoutCache ----------------------------------------------------------------------------
expect 0 "$TOOL" "$TMP/fc" stats
out_has "type: FanoutCache"
out_has "shards: 4"
out_has "count: 51"
expect 0 "$TOOL" "$TMP/fc" get k3
out_is "v3"
expect 1 "$TOOL" "$TMP/fc" get k99
expect 0 "$TOOL" "$TMP/fc" expire
out_is "1"
expect 0 "$TOOL" "$TMP/fc" set fromtool hi
"$PY" -c '
import sys, diskcache
f = diskcache.FanoutCache(sys.argv[1], shards=4)
assert f.get("fromtool") == "hi", f.get("fromtool")
' "$TMP/fc" || fail "python FanoutCache does not find the tool's key (shard routing)"
expect 0 "$TOOL" "$TMP/fc" evict even
out_is "25"
expect 0 "$TOOL" "$TMP/fc" keys
[ "$(wc -l <"$TMP/out")" -eq 26 ] || fail "fanout keys: expected 26 lines, got $(wc -l <"$TMP/out")"
out_has "'k1'"
out_has "'fromtool'"
expect 0 "$TOOL" "$TMP/fc" check
out_is "ok"
expect 0 "$TOOL" "$TMP/fc" clear
out_is "26"
expect 0 "$TOOL" "$TMP/fc" stats
out_has "count: 0"

# ---- keys print in a form get/erase take back; binary values on a terminal ------------------
"$PY" -c 'import diskcache, sys; c = diskcache.Cache(sys.argv[1]); c.set(b"a\x00b\n", "nul"); c.set("it'"'"'s", "quote"); c.set(-3, "neg"); c.set("bin", b"\x00\x01\xff"); c.close()' "$TMP/rk"
expect 0 "$TOOL" "$TMP/rk" keys
out_has "b'a\x00b\n'"
out_has "'it\'s'"
out_has "-3"
while IFS= read -r k; do
  expect 0 "$TOOL" "$TMP/rk" get "$k" --key-type repr --raw
done <"$TMP/out"
expect 0 "$TOOL" "$TMP/rk" get "b'a\x00b\n'" --key-type repr
out_is "nul"
# Without --key-type, a quoted key as `keys` printed it works too (text first, then the repr);
# numbers are not guessed (the text key '-3' is not the int key -3).
expect 0 "$TOOL" "$TMP/rk" get "'it\'s'"
out_is "quote"
expect 1 "$TOOL" "$TMP/rk" get "'nope'"
expect 1 "$TOOL" "$TMP/rk" get -- -3
expect 2 "$TOOL" "$TMP/rk" get "b'unterminated" --key-type repr
expect 2 "$TOOL" "$TMP/rk" get "'bad \q escape'" --key-type repr
expect 0 "$TOOL" "$TMP/rk" erase "b'a\x00b\n'" --key-type repr
expect 1 "$TOOL" "$TMP/rk" get "b'a\x00b\n'" --key-type repr
expect 1 "$TOOL" "$TMP/rk" erase "b'a\x00b\n'" --key-type repr
# Into a pipe the bytes go raw; on a terminal (a pty from script(1)) as a repr, unless --raw.
expect 0 "$TOOL" "$TMP/rk" get bin
[ "$(od -An -tx1 "$TMP/out" | tr -d ' \n')" == "0001ff" ] || fail "get into a pipe is not raw"
script -qec "$TOOL $TMP/rk get bin" /dev/null >"$TMP/tty" 2>&1
grep -qF "b'\x00\x01\xff'" "$TMP/tty" || fail "get on a terminal printed no repr: $(od -c "$TMP/tty" | head -3)"
expect 2 "$TOOL" "$TMP/rk" keys --raw

# ---- inspection never writes, and never waits for a writer ------------------------------------
# A FanoutCache made with an 8 GiB limit: stats must not rewrite its shards' size_limit.
"$PY" -c 'import sys, diskcache; f = diskcache.FanoutCache(sys.argv[1], shards=4, size_limit=2**33); f.set("a", 1); f.close()' "$TMP/big"
expect 0 "$TOOL" "$TMP/big" stats
expect 0 "$TOOL" "$TMP/big" keys
expect 0 "$TOOL" "$TMP/big" get a --value-type int
limit=$("$PY" -c 'import sqlite3, sys; print(int(sqlite3.connect(sys.argv[1]).execute("select value from Settings where key = ?", ("size_limit",)).fetchone()[0]))' "$TMP/big/000/cache.db")
[ "$limit" == "$((2 ** 31))" ] || fail "stats rewrote a shard's size_limit to $limit"
# Another application's SQLite file named cache.db: refused, and left exactly as it was.
mkdir -p "$TMP/foreign"
"$PY" -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("create table notes(x)"); c.commit()' "$TMP/foreign/cache.db"
before=$(sha256sum "$TMP/foreign/cache.db")
expect 3 "$TOOL" "$TMP/foreign" stats
err_has "no Cache table"
expect 3 "$TOOL" "$TMP/foreign" get a
[ "$before" == "$(sha256sum "$TMP/foreign/cache.db")" ] || fail "stats changed a database that is not a cache"
[ ! -e "$TMP/foreign/cache.db-wal" ] || fail "stats switched a foreign database to WAL"
# A writer holding the write lock for 20 s: get and stats answer at once from the WAL snapshot.
"$PY" -c 'import diskcache, sys; c = diskcache.Cache(sys.argv[1]); c.set("w", "before"); c.close()' "$TMP/locked"
"$PY" -c 'import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute("begin immediate"); c.execute("update Settings set value = value where key = ?", ("count",)); print("locked", flush=True); time.sleep(20)' "$TMP/locked/cache.db" >"$TMP/lockholder" &
holder=$!
for _ in $(seq 100); do grep -q locked "$TMP/lockholder" 2>/dev/null && break; sleep 0.1; done
t0=$(date +%s)
expect 0 "$TOOL" "$TMP/locked" get w
out_is "before"
expect 0 "$TOOL" "$TMP/locked" stats
[ $(($(date +%s) - t0)) -lt 10 ] || fail "inspection waited for the writer"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# A 4-shard fanout cache (shard count recorded by a write through the tool) that Python's
# FanoutCache then opens without shards=: it adds shards 004..007 and misses keys; every command
# of the tool warns, with the fix (docs/disk.md, "FanoutCache from Python").
"$PY" -c 'import diskcache, sys; f = diskcache.FanoutCache(sys.argv[1], shards=4); [f.set("k%d" % i, i) for i in range(50)]; f.close()' "$TMP/fan4"
expect 0 "$TOOL" "$TMP/fan4" set made_here v
[ -e "$TMP/fan4/dogpile-fanout.json" ] || fail "the tool did not record the shard count"
expect 0 "$TOOL" "$TMP/fan4" stats
if grep -q warning "$TMP/err"; then fail "warned about a consistent fanout cache: $(cat "$TMP/err")"; fi
seen=$("$PY" -c 'import diskcache, sys; f = diskcache.FanoutCache(sys.argv[1]); print(sum(f.get("k%d" % i) is not None for i in range(50))); f.set("py8", 1); f.close()' "$TMP/fan4")
[ "$seen" -lt 50 ] || fail "python FanoutCache without shards= saw all 50 keys: the case this warning is about did not happen"
expect 0 "$TOOL" "$TMP/fan4" stats
out_has "shards: 4"
err_has "records 4 shards (dogpile-fanout.json) but has 8 shard directories"
err_has "FanoutCache(directory, shards=4)"
expect 0 "$TOOL" "$TMP/fan4" get k7 --value-type int
err_has "records 4 shards"
seen=$("$PY" -c 'import diskcache, sys; f = diskcache.FanoutCache(sys.argv[1], shards=4); print(sum(f.get("k%d" % i) is not None for i in range(50)), f.get("made_here"))' "$TMP/fan4")
[ "$seen" == "50 v" ] || fail "python FanoutCache with shards=4 did not see every key: $seen"

if [ "$FAILS" -ne 0 ]; then
  echo "$FAILS failure(s)" >&2
  exit 1
fi
echo "all dogpile-disk tool tests passed"
