//! Reading a store's sqlite files directly, to check what was written.

use rusqlite::Connection;

/// The one number `sql` (a `SELECT COUNT(*) ...`) answers; panics naming
/// the query if it fails.
pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
