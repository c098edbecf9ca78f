// DiskCache's SQL: python-diskcache's schema (tables, indexes, triggers) and every statement the
// cache runs. Kept together so that a statement and the schema it relies on are read side by side.
#pragma once

namespace dogpile::detail {

inline constexpr const char* kCreateSettings =
    "CREATE TABLE IF NOT EXISTS Settings ( key TEXT NOT NULL UNIQUE, value)";
inline constexpr const char* kCreateCache =
    "CREATE TABLE IF NOT EXISTS Cache ( rowid INTEGER PRIMARY KEY, key BLOB, raw INTEGER,"
    " store_time REAL, expire_time REAL, access_time REAL, access_count INTEGER DEFAULT 0,"
    " tag BLOB, size INTEGER DEFAULT 0, mode INTEGER DEFAULT 0, filename TEXT, value BLOB)";
// Single-quoted literals (diskcache's double quotes rely on SQLite's DQS misfeature); the
// trigger names are diskcache's, so an existing database keeps its own triggers.
inline constexpr const char* kSchema[] = {
    "CREATE UNIQUE INDEX IF NOT EXISTS Cache_key_raw ON Cache(key, raw)",
    "CREATE INDEX IF NOT EXISTS Cache_expire_time ON Cache (expire_time) WHERE expire_time IS NOT "
    "NULL",
    "CREATE TRIGGER IF NOT EXISTS Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + 1 WHERE key = 'count'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value - 1 WHERE key = 'count'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + NEW.size WHERE key = 'size'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = 'size'; END",
    "CREATE TRIGGER IF NOT EXISTS Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
    " UPDATE Settings SET value = value - OLD.size WHERE key = 'size'; END",
};
inline constexpr const char* kPolicyIndex[] = {
    "CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time)",
    "CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)",
    "CREATE INDEX IF NOT EXISTS Cache_access_count ON Cache (access_count)",
    nullptr,
};
inline constexpr const char* kPolicyCull[] = {
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY store_time LIMIT ?)"
    " RETURNING filename",
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY access_time LIMIT ?)"
    " RETURNING filename",
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY access_count LIMIT ?)"
    " RETURNING filename",
    nullptr,
};
inline constexpr const char* kIncrUpdate[] = {
    "UPDATE Cache SET value = ?1, store_time = ?2 WHERE rowid = ?3",
    "UPDATE Cache SET value = ?1, store_time = ?2, access_time = ?2 WHERE rowid = ?3",
    ("UPDATE Cache SET value = ?1, store_time = ?2, access_count = access_count + 1 "
     "WHERE rowid = ?3"),
    "UPDATE Cache SET value = ?1, store_time = ?2 WHERE rowid = ?3",
};
// diskcache's _cull step 2 (reference §2.7): the expired rows first, in expire_time order
// (index Cache_expire_time). A plain SELECT, and a DELETE only for the rows it found: most writes
// find none, and a DELETE ... IN (subquery) RETURNING builds temporary tables on every call.
inline constexpr const char* kCullExpired =
    "SELECT rowid, filename FROM Cache WHERE expire_time IS NOT NULL AND expire_time < ?"
    " ORDER BY expire_time LIMIT ?";
inline constexpr const char* kBeginImmediate = "BEGIN IMMEDIATE";
inline constexpr const char* kCommit = "COMMIT";
inline constexpr const char* kRollback = "ROLLBACK";
// The old row of a set: its rowid (the row set_value updates in place), its expiry (for add)
// and its file (to delete after the commit); not its value, which a set never needs to load.
inline constexpr const char* kSelectOld =
    "SELECT rowid, expire_time, filename FROM Cache WHERE key = ? AND raw = 1";
// set_value's write once kSelectOld has told whether the row exists (inside BEGIN IMMEDIATE, so
// no other writer can change that in between): an UPDATE by rowid or a plain INSERT, the same
// row and triggers as kUpsert without its second key-index seek. Parameters as kUpsert's, except
// ?1 is the rowid in kUpdateRowid.
inline constexpr const char* kUpdateRowid =
    "UPDATE Cache SET store_time = ?2, expire_time = ?3, access_time = ?2, access_count = 0,"
    " tag = ?4, size = ?5, mode = ?6, filename = ?7, value = ?8 WHERE rowid = ?1";
inline constexpr const char* kInsert =
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8)";
inline constexpr const char* kSizeByRowid =
    "SELECT value FROM Settings WHERE rowid = ? AND key = 'size'";
inline constexpr const char* kSizeRow = "SELECT rowid, value FROM Settings WHERE key = 'size'";
inline constexpr const char* kSelectLive =
    "SELECT rowid, expire_time, tag, mode, filename, value FROM Cache"
    " WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)";
inline constexpr const char* kSelectAny =
    "SELECT rowid, expire_time, mode, filename, value FROM Cache WHERE key = ? AND raw = 1";
inline constexpr const char* kUpsert =
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?1, 1, ?2, ?3, ?2, 0, ?4, ?5, ?6, ?7, ?8)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time, access_count = 0,"
    " tag = excluded.tag, size = excluded.size, mode = excluded.mode,"
    " filename = excluded.filename, value = excluded.value";
inline constexpr const char* kDeleteLive =
    "DELETE FROM Cache WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
    " RETURNING filename";
inline constexpr const char* kDeleteRowid = "DELETE FROM Cache WHERE rowid = ?";
inline constexpr const char* kTouch =
    "UPDATE Cache SET expire_time = ? WHERE key = ? AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?)";
inline constexpr const char* kContains =
    "SELECT 1 FROM Cache WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)";
inline constexpr const char* kSettingGet = "SELECT value FROM Settings WHERE key = ?";
inline constexpr const char* kSettingPut = "INSERT OR REPLACE INTO Settings VALUES (?, ?)";
inline constexpr const char* kSettingAdd = "INSERT OR IGNORE INTO Settings VALUES (?, ?)";
inline constexpr const char* kSettingsAll = "SELECT key, value FROM Settings";
inline constexpr const char* kPageCount = "PRAGMA page_count";
inline constexpr const char* kAccessTime =
    "UPDATE Cache SET access_time = ?1 WHERE rowid = ?2 AND (access_time IS NULL OR access_time < "
    "?1)";
inline constexpr const char* kAccessCount =
    "UPDATE Cache SET access_count = access_count + ? WHERE rowid = ?";
inline constexpr const char* kAddHits = "UPDATE Settings SET value = value + ? WHERE key = 'hits'";
inline constexpr const char* kAddMisses =
    "UPDATE Settings SET value = value + ? WHERE key = 'misses'";
inline constexpr const char* kQueueIntBack =
    "SELECT key FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key DESC LIMIT 1";
inline constexpr const char* kQueueIntFront =
    "SELECT key FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key LIMIT 1";
inline constexpr const char* kPullFront =
    "SELECT rowid, expire_time, tag, mode, filename, value, key FROM Cache"
    " WHERE ? < key AND key < ? AND raw = 1 ORDER BY key LIMIT 1";
inline constexpr const char* kPullBack =
    "SELECT rowid, expire_time, tag, mode, filename, value, key FROM Cache"
    " WHERE ? < key AND key < ? AND raw = 1 ORDER BY key DESC LIMIT 1";
inline constexpr const char* kPeekItemLast =
    "SELECT rowid, expire_time, tag, mode, filename, value, key, raw FROM Cache"
    " ORDER BY rowid DESC LIMIT 1";
inline constexpr const char* kPeekItemFirst =
    "SELECT rowid, expire_time, tag, mode, filename, value, key, raw FROM Cache"
    " ORDER BY rowid LIMIT 1";
inline constexpr const char* kKeysFwd =
    "SELECT rowid, key, raw FROM Cache WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT 100";
inline constexpr const char* kKeysRev =
    "SELECT rowid, key, raw FROM Cache WHERE rowid < ? AND rowid >= ? ORDER BY rowid DESC LIMIT "
    "100";
inline constexpr const char* kMaxRowid =
    "SELECT COALESCE(MAX(rowid), 0), COALESCE(MIN(rowid), 0) FROM Cache";
inline constexpr const char* kSortedFwd = "SELECT key, raw FROM Cache ORDER BY key, raw";
inline constexpr const char* kSortedRev = "SELECT key, raw FROM Cache ORDER BY key DESC, raw DESC";
inline constexpr const char* kClearBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache ORDER BY rowid LIMIT 100)"
    " RETURNING filename";
inline constexpr const char* kExpireBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache WHERE expire_time > 0"
    " AND expire_time < ? ORDER BY expire_time, rowid LIMIT 100) RETURNING filename";
inline constexpr const char* kEvictBatch =
    "DELETE FROM Cache WHERE rowid IN (SELECT rowid FROM Cache WHERE tag = ?"
    " ORDER BY rowid LIMIT 100) RETURNING filename";

}  // namespace dogpile::detail
