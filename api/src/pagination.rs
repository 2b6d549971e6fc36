//! The two list envelopes (page mode and cursor mode), the one cursor type,
//! and read-your-writes (`consistent_with`).
//!
//! Every cursor-mode list works the same way: [`CursorParams::keyset`]
//! checks `limit` and decodes `cursor` into the list's [`CursorKey`] (400
//! `invalid_cursor` for anything this API did not hand out), the query
//! fetches one row more than the limit, and [`Keyset::page`] builds the
//! envelope with the cursor after the last row.

use std::time::Duration;

use axum::http::{HeaderValue, Uri};
use chrono::{DateTime, Utc};
use lectern_domain::Position;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::{Code, FieldError, Problem};

/// Page mode: `page` from 1, `page_size` 1 to 100 (default 20).
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    /// From 1, default 1.
    pub page: Option<u32>,
    /// 1 to 100, default 20.
    pub page_size: Option<u32>,
}

/// A checked page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// The page, from 1.
    pub page: u32,
    /// Rows per page.
    pub page_size: u32,
}

impl PageParams {
    /// Check the values: 422 naming the parameter otherwise.
    pub fn parse(&self) -> Result<PageRequest, Problem> {
        let page = self.page.unwrap_or(1);
        let page_size = self.page_size.unwrap_or(20);
        let mut errors = Vec::new();
        if page == 0 {
            errors.push(FieldError {
                pointer: "#/page".into(),
                detail: "must be at least 1".into(),
            });
        }
        if !(1..=100).contains(&page_size) {
            errors.push(FieldError {
                pointer: "#/page_size".into(),
                detail: "must be 1 to 100".into(),
            });
        }
        if errors.is_empty() {
            Ok(PageRequest { page, page_size })
        } else {
            Err(Problem::validation(errors))
        }
    }
}

impl PageRequest {
    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }
}

/// A page of results.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The rows of this page.
    pub results: Vec<T>,
    /// The page, from 1.
    pub page: u32,
    /// Rows per page.
    pub page_size: u32,
    /// Rows in all.
    pub total: i64,
    /// Pages in all.
    pub total_pages: i64,
    /// The next page's URL, if there is one.
    pub next: Option<String>,
    /// The previous page's URL, if there is one.
    pub prev: Option<String>,
}

impl<T> Page<T> {
    /// The envelope for `results` of `request` out of `total`, with links
    /// built from the request's own URI.
    pub fn new(results: Vec<T>, request: PageRequest, total: i64, uri: &Uri) -> Self {
        let size = i64::from(request.page_size);
        let total_pages = (total + size - 1) / size;
        let page = i64::from(request.page);
        let link = |p: i64| {
            let mut query: Vec<String> = uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
                .map(str::to_owned)
                .collect();
            query.push(format!("page={p}"));
            format!("{}?{}", uri.path(), query.join("&"))
        };
        Self {
            results,
            page: request.page,
            page_size: request.page_size,
            total,
            total_pages,
            next: (page < total_pages).then(|| link(page + 1)),
            prev: (page > 1).then(|| link((page - 1).min(total_pages.max(1)))),
        }
    }
}

/// Cursor mode: an opaque `cursor` from the previous page and `limit` 1 to
/// 100 (default 50).
#[derive(Debug, Deserialize, IntoParams)]
pub struct CursorParams {
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100, default 50.
    pub limit: Option<u32>,
}

/// A position in a list's keyset order, as a cursor carries it. The cursor
/// is the key's text, base64url-encoded, so clients treat it as opaque.
pub trait CursorKey: Sized {
    /// The key as text.
    fn to_text(&self) -> String;
    /// The key from its text; `None` for text this API did not write.
    fn from_text(s: &str) -> Option<Self>;

    /// The opaque cursor for this key.
    fn to_cursor(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_text())
    }

    /// The key in `cursor`; 400 `invalid_cursor` for anything this API did
    /// not hand out.
    fn from_cursor(cursor: &str) -> Result<Self, Problem> {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| Self::from_text(&s))
            .ok_or_else(|| {
                Problem::new(
                    Code::INVALID_CURSOR,
                    "The cursor is not one this API returned; start again without it.",
                )
            })
    }
}

/// A log position (the audit log's order).
impl CursorKey for Position {
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// A sequence number or version (a board's ops, a channel's messages).
impl CursorKey for i64 {
    fn to_text(&self) -> String {
        self.to_string()
    }
    fn from_text(s: &str) -> Option<Self> {
        s.parse().ok().filter(|n: &i64| *n >= 0)
    }
}

/// A time and an id (lessons by start time).
impl CursorKey for (DateTime<Utc>, Uuid) {
    fn to_text(&self) -> String {
        format!("{}|{}", self.0.to_rfc3339(), self.1)
    }
    fn from_text(s: &str) -> Option<Self> {
        let (at, id) = s.split_once('|')?;
        Some((
            DateTime::parse_from_rfc3339(at).ok()?.to_utc(),
            id.parse().ok()?,
        ))
    }
}

/// A time, an id and a sequence number (deliveries in the order sent).
impl CursorKey for (DateTime<Utc>, Uuid, i64) {
    fn to_text(&self) -> String {
        format!("{}|{}|{}", self.0.to_rfc3339(), self.1, self.2)
    }
    fn from_text(s: &str) -> Option<Self> {
        let mut parts = s.split('|');
        let at = DateTime::parse_from_rfc3339(parts.next()?).ok()?.to_utc();
        let id = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((at, id, seq))
    }
}

/// A checked cursor-mode request: where the page continues, and its size.
#[derive(Debug, Clone, Copy)]
pub struct Keyset<K> {
    /// The key of the previous page's last row; `None` for the first page.
    pub after: Option<K>,
    /// Rows on the page.
    pub limit: u32,
}

impl CursorParams {
    /// Check `limit` (422 naming it) and decode `cursor`.
    pub fn keyset<K: CursorKey>(&self) -> Result<Keyset<K>, Problem> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(Problem::invalid("#/limit", "must be 1 to 100"));
        }
        let after = self.cursor.as_deref().map(K::from_cursor).transpose()?;
        Ok(Keyset { after, limit })
    }
}

impl<K: CursorKey> Keyset<K> {
    /// The page of `rows`, which the query fetched with one more row than
    /// [`Self::limit`] to tell whether there is more; `key` is a row's
    /// position in the list's order.
    pub fn page<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> CursorPage<T> {
        let has_more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_cursor = if has_more {
            rows.last().map(|r| key(r).to_cursor())
        } else {
            None
        };
        CursorPage {
            results: rows,
            next_cursor,
            has_more,
        }
    }

    /// The rows a query fetches for this page: one more than the limit.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }
}

/// A page in cursor mode.
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorPage<T> {
    /// The rows of this page.
    pub results: Vec<T>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}

/// `consistent_with`: a `position` token from a command's response.
#[derive(Debug, Deserialize, IntoParams)]
pub struct Consistency {
    /// Wait until the read model has applied this position (at most 5 s).
    pub consistent_with: Option<String>,
}

/// How long a query waits for its projection to catch up.
pub const CONSISTENCY_BOUND: Duration = Duration::from_secs(5);

impl Consistency {
    /// Wait for `projection` to pass the requested position where queries
    /// are served (on a replica: until the replica has replayed a checkpoint
    /// that passes it). 422 for a malformed token or one past the head of
    /// the log (on the primary); 503 with `Retry-After` if the bound passes
    /// first.
    pub async fn wait(&self, state: &crate::AppState, projection: &str) -> Result<(), Problem> {
        let Some(token) = &self.consistent_with else {
            return Ok(());
        };
        let position: Position = token.parse().map_err(|_| {
            Problem::validation(vec![FieldError {
                pointer: "#/consistent_with".into(),
                detail: "is not a position token".into(),
            }])
        })?;
        // A position past the last one the log has handed out was never in
        // a command's answer: refuse it now rather than wait for nothing.
        let head = sqlx::query_scalar!(
            r#"SELECT coalesce(max(global_position), 0) AS "head!" FROM events"#
        )
        .fetch_one(&state.pool)
        .await?;
        if position.global_position > head {
            return Err(Problem::invalid(
                "#/consistent_with",
                "is past the head of the log: no command answered it",
            ));
        }
        if lectern_projections::status::wait_for(
            &state.read_pool,
            projection,
            position,
            CONSISTENCY_BOUND,
        )
        .await?
        {
            return Ok(());
        }
        let mut p = Problem::new(
            Code::NOT_YET_CONSISTENT,
            format!(
                "The {projection} read model has not reached position {token} yet; retry shortly."
            ),
        );
        p.headers.push((
            axum::http::header::RETRY_AFTER,
            HeaderValue::from_static("1"),
        ));
        Err(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_one_more_row_than_the_limit_says_there_is_more() {
        let params = CursorParams {
            cursor: None,
            limit: Some(2),
        };
        let keyset = params.keyset::<i64>().expect("a valid request");
        assert_eq!(keyset.fetch(), 3);
        let page = keyset.page(vec![10_i64, 11, 12], |n| *n);
        assert_eq!(page.results, [10, 11]);
        assert!(page.has_more);
        let next = page.next_cursor.expect("a cursor");
        assert_eq!(i64::from_cursor(&next).expect("decodes"), 11);
        let last = keyset.page(vec![13_i64], |n| *n);
        assert_eq!((last.has_more, last.next_cursor), (false, None));
    }

    #[test]
    fn keys_round_trip_and_foreign_cursors_are_refused() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("a time")
            .to_utc();
        let key = (at, Uuid::from_u128(7), 42_i64);
        let back = <(DateTime<Utc>, Uuid, i64)>::from_cursor(&key.to_cursor()).expect("decodes");
        assert_eq!(back, key);
        let position = Position {
            transaction_id: 5,
            global_position: 9,
        };
        assert_eq!(
            Position::from_cursor(&position.to_cursor()).expect("decodes"),
            position
        );
        for foreign in ["not-base64!!", "MTIz", ""] {
            let refused = <(DateTime<Utc>, Uuid)>::from_cursor(foreign).expect_err("refused");
            assert_eq!(refused.code, Code::INVALID_CURSOR);
        }
        let limit = CursorParams {
            cursor: None,
            limit: Some(101),
        }
        .keyset::<i64>()
        .expect_err("too many");
        assert_eq!(limit.errors[0].pointer, "#/limit");
    }
}
