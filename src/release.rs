//! Releases: locally tagged images `<repository>:YYYY.MM.DD-<sha7>`.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::Serialize;

/// OCI label: the full commit the image was built from.
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// OCI label: RFC 3339 build time.
pub const LABEL_CREATED: &str = "org.opencontainers.image.created";
/// OCI label: the release tag.
pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
/// OCI label: where the source came from (the remote URL, else the checkout path).
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// The commit subject, so `releases` can say what a release is without the checkout.
pub const LABEL_SUBJECT: &str = "dev.dockmaster.subject";
/// The compose project and service the release was built for.
pub const LABEL_APP: &str = "dev.dockmaster.app";

/// A release tag: `YYYY.MM.DD-<sha7>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Tag {
    date: (i16, i8, i8),
    sha7: String,
}

impl Tag {
    /// The tag of `commit` built on `when` (UTC date).
    pub fn new(when: Timestamp, commit: &str) -> Tag {
        let date = when.to_zoned(jiff::tz::TimeZone::UTC).date();
        Tag {
            date: (date.year(), date.month(), date.day()),
            sha7: commit.chars().take(7).collect::<String>().to_lowercase(),
        }
    }

    pub fn sha7(&self) -> &str {
        &self.sha7
    }
}

impl From<Tag> for String {
    fn from(tag: Tag) -> String {
        tag.to_string()
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.date;
        write!(f, "{y:04}.{m:02}.{d:02}-{}", self.sha7)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a release tag\nhint: release tags look like 2026.01.10-abc123f (UTC date, then the first 7 hex digits of the commit)"
)]
pub struct MalformedTag(pub String);

impl FromStr for Tag {
    type Err = MalformedTag;

    fn from_str(s: &str) -> Result<Tag, MalformedTag> {
        let bad = || MalformedTag(s.to_string());
        let (date, sha) = s.split_once('-').ok_or_else(bad)?;
        let parts: Vec<&str> = date.split('.').collect();
        if parts.len() != 3
            || parts[0].len() != 4
            || parts[1].len() != 2
            || parts[2].len() != 2
            || sha.len() != 7
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let y: i16 = parts[0].parse().map_err(|_| bad())?;
        let m: i8 = parts[1].parse().map_err(|_| bad())?;
        let d: i8 = parts[2].parse().map_err(|_| bad())?;
        // Reject impossible dates such as 2026.02.30: a tag names a real day.
        jiff::civil::Date::new(y, m, d).map_err(|_| bad())?;
        Ok(Tag {
            date: (y, m, d),
            sha7: sha.to_string(),
        })
    }
}

/// The first 7 characters of a commit id, however short the id (an abbreviated or
/// malformed id must never panic a deploy).
pub fn short_sha(id: &str) -> &str {
    match id.char_indices().nth(7) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// One kept release of the app, as the engine reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Release {
    pub tag: Tag,
    /// The full commit from the revision label; the short one when the image has no labels
    /// (images built by the guide's scripts).
    pub commit: String,
    pub subject: Option<String>,
    /// Build time from the `created` label, else the engine's image creation time.
    pub created: Timestamp,
    pub image_id: String,
    pub size_bytes: i64,
}

impl Release {
    /// Order newest first: build time, then tag as a tie-break so the order is total.
    pub fn newest_first(a: &Release, b: &Release) -> std::cmp::Ordering {
        b.created.cmp(&a.created).then_with(|| b.tag.cmp(&a.tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_from_commit_uses_utc_date_and_seven_hex() {
        let ts: Timestamp = "2026-01-10T23:30:00-05:00".parse().unwrap();
        let tag = Tag::new(ts, "ABC123F0123456789");
        assert_eq!(tag.to_string(), "2026.01.11-abc123f");
    }

    #[test]
    fn tag_roundtrip() {
        let tag: Tag = "2026.01.09-def4567".parse().unwrap();
        assert_eq!(tag.to_string(), "2026.01.09-def4567");
        assert_eq!(tag.sha7(), "def4567");
    }

    /// Regression: deploy sliced `&commit.id[..7]`, which panics on a shorter id.
    #[test]
    fn short_commit_ids_do_not_panic_the_short_form() {
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha(""), "");
        assert_eq!(short_sha("0123456789abcdef"), "0123456");
        assert_eq!(short_sha("éééééééé"), "ééééééé");
    }

    #[test]
    fn malformed_tags_are_refused() {
        for bad in [
            "latest",
            "2026.1.09-def4567",
            "2026.01.09-def456",
            "2026.01.09-def45678",
            "2026.01.09-DEF4567",
            "2026.02.30-def4567",
            "2026.01.09_def4567",
            "2026.01.09-ghijklm",
            "",
        ] {
            assert!(bad.parse::<Tag>().is_err(), "{bad} should be refused");
        }
    }
}
