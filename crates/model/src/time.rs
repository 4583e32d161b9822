//! Timestamps: Unix seconds inside sesame, RFC 3339 or `YYYY-MM-DD` outside.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

/// The current time in Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses a document date: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp.
pub fn parse_date(text: &str) -> Option<i64> {
    if let Ok(d) = Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Some(d.midnight().assume_utc().unix_timestamp());
    }
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// UTC date-time for a Unix timestamp, clamped to the representable range.
pub fn datetime(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(UtcOffset::UTC)
}

/// Formats a timestamp as RFC 3339 in UTC, e.g. `2024-09-01T00:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    datetime(secs).format(&Rfc3339).unwrap_or_default()
}

/// Formats a time in milliseconds as RFC 3339 in UTC, with a fraction of a
/// second only when it has one.
pub fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp to milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// `(year, month)` of a timestamp, in UTC.
pub fn year_month(secs: i64) -> (i32, u8) {
    let t = datetime(secs);
    (t.year(), t.month() as u8)
}

/// Formats a timestamp for HTTP headers (`Last-Modified`), IMF-fixdate.
pub fn http_date(secs: i64) -> String {
    datetime(secs)
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap_or_default()
}

/// Parses an HTTP date in any of the three formats a recipient must accept
/// (RFC 9110, section 5.6.7): IMF-fixdate, RFC 850 and asctime.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = parse_date("2024-09-01").unwrap();
        assert_eq!(rfc3339(t), "2024-09-01T00:00:00Z");
        assert_eq!(year_month(t), (2024, 9));
        assert_eq!(parse_date("2024-09-01T12:00:00+02:00").map(rfc3339).unwrap(), "2024-09-01T10:00:00Z");
        assert_eq!(parse_date("yesterday"), None);
        let h = http_date(t);
        assert_eq!(h, "Sun, 01 Sep 2024 00:00:00 GMT");
        assert_eq!(parse_http_date(&h), Some(t));
    }

    #[test]
    fn rfc9110_5_6_7_all_three_date_formats() {
        let t = Some(784_111_777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), t, "IMF-fixdate");
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), t, "RFC 850");
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), t, "asctime");
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
