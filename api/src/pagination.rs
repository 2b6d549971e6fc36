//! The two list envelopes of DESIGN "Pagination", and read-your-writes.

use std::time::Duration;

use axum::http::{HeaderValue, Uri};
use lectern_domain::Position;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::{Code, FieldError, Problem};

/// Page mode: `page` from 1, `page_size` 1 to 100 (default 20).
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageParams {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

/// A checked page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u32,
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
    pub results: Vec<T>,
    pub page: u32,
    pub page_size: u32,
    pub total: i64,
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
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

impl CursorParams {
    /// The position to continue before, and the limit.
    pub fn parse(&self) -> Result<(Option<Position>, u32), Problem> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(Problem::validation(vec![FieldError {
                pointer: "#/limit".into(),
                detail: "must be 1 to 100".into(),
            }]));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse::<Position>().map_err(|_| {
                Problem::validation(vec![FieldError {
                    pointer: "#/cursor".into(),
                    detail: "is not a cursor this API returned".into(),
                }])
            })?),
        };
        Ok((cursor, limit))
    }
}

/// A page in cursor mode.
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorPage<T> {
    pub results: Vec<T>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
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
    /// Wait for `projection` to pass the requested position. 422 for a
    /// malformed token; 503 with `Retry-After` if the bound passes first.
    pub async fn wait(&self, pool: &sqlx::PgPool, projection: &str) -> Result<(), Problem> {
        let Some(token) = &self.consistent_with else {
            return Ok(());
        };
        let position: Position = token.parse().map_err(|_| {
            Problem::validation(vec![FieldError {
                pointer: "#/consistent_with".into(),
                detail: "is not a position token".into(),
            }])
        })?;
        if lectern_projections::status::wait_for(pool, projection, position, CONSISTENCY_BOUND)
            .await?
        {
            return Ok(());
        }
        let mut p = Problem::new(
            Code::NotYetConsistent,
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

/// An opaque cursor for `raw`, a position in some keyset order.
pub fn encode_cursor(raw: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The keyset position in `cursor`, read by `parse`; 400 `invalid_cursor`
/// for anything this API did not hand out.
pub fn decode_cursor<T>(cursor: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, Problem> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| parse(&s))
        .ok_or_else(|| {
            Problem::new(
                Code::InvalidCursor,
                "The cursor is not one this API returned; start again without it.",
            )
        })
}

/// A cursor-mode `limit`: 1 to 100, default 50.
pub fn limit(limit: Option<u32>) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(50);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::validation(vec![FieldError {
            pointer: "#/limit".into(),
            detail: "must be 1 to 100".into(),
        }]))
    }
}
