//! How answers become JSON bytes: through serde, except pages of posts (feeds and post
//! lists, the hottest answers), which are written by hand byte for byte as serde_json writes
//! them (a test holds the two equal), skipping its per-byte escaping of post bodies where
//! nothing needs escaping and its per-field overhead.

use chrono::{DateTime, Datelike, Timelike, Utc};
use murmur_projections::read_model::{Page, PostItem, Profile, UserListItem};
use serde::Serialize;

/// An answer's JSON.
pub trait Render {
    fn render(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
}

fn with_serde<T: Serialize>(value: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}

impl Render for Profile {
    fn render(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        with_serde(self, out)
    }
}

impl Render for Page<UserListItem> {
    fn render(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        with_serde(self, out)
    }
}

impl Render for Page<PostItem> {
    fn render(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"items\":[");
        for (i, post) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            integer(out, post.id);
            out.extend_from_slice(b",\"body\":");
            string(out, &post.body)?;
            out.extend_from_slice(b",\"created_at\":");
            timestamp(out, &post.created_at)?;
            out.extend_from_slice(b",\"author\":{\"id\":");
            integer(out, post.author.id);
            out.extend_from_slice(b",\"handle\":");
            string(out, &post.author.handle)?;
            out.extend_from_slice(b",\"display_name\":");
            string(out, &post.author.display_name)?;
            out.extend_from_slice(b"}}");
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        match &self.next_cursor {
            Some(cursor) => string(out, cursor)?,
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(())
    }
}

/// A timestamp as chrono's serde writes it (RFC 3339, `Z`, a fraction of 0, 3, 6 or 9
/// digits, whichever shows it exactly); years outside 0–9999 and leap seconds are left to
/// chrono.
fn timestamp(out: &mut Vec<u8>, at: &DateTime<Utc>) -> serde_json::Result<()> {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return with_serde(at, out);
    }
    out.push(b'"');
    digits(out, at.year() as u32, 4);
    for n in [at.month(), at.day()] {
        out.push(b'-');
        digits(out, n, 2);
    }
    out.push(b'T');
    digits(out, at.hour(), 2);
    for n in [at.minute(), at.second()] {
        out.push(b':');
        digits(out, n, 2);
    }
    if nanos != 0 {
        out.push(b'.');
        if nanos.is_multiple_of(1_000_000) {
            digits(out, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            digits(out, nanos / 1_000, 6);
        } else {
            digits(out, nanos, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

/// `n`'s last `width` (at most 9) decimal digits, zero-padded.
fn digits(out: &mut Vec<u8>, mut n: u32, width: usize) {
    let mut buf = [b'0'; 9];
    for d in buf[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string: copied as it is when serde_json would escape none of its bytes (control
/// characters, `"` and `\`), else written by serde_json.
fn string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if needs_escaping(s.as_bytes()) {
        return with_serde(&s, out);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether any byte needs escaping; checked 32 bytes at a time without early exits inside a
/// block, so that the compiler can vectorise it.
fn needs_escaping(bytes: &[u8]) -> bool {
    let escaped = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | escaped(b)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| escaped(b))
}

#[cfg(test)]
mod tests {
    use murmur_projections::read_model::Author;
    use proptest::prelude::*;

    use super::*;

    fn post(id: i64, body: String, at: DateTime<Utc>, handle: String, name: String) -> PostItem {
        PostItem {
            id,
            body,
            created_at: at,
            author: Author {
                id: id / 3 + 1,
                handle,
                display_name: name,
            },
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z ]{0,80}",
            "\\PC{0,80}",
            any::<String>(),
            "[\"\\\\\\x00-\\x1f\\x7f/é€😀a]{0,40}",
        ]
    }

    /// Some whole seconds, milli- or microseconds; some years beyond 0–9999.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        (
            -100_000_000_000i64..400_000_000_000,
            0..1_000_000_000u32,
            0..4usize,
        )
            .prop_map(|(secs, nanos, round)| {
                let unit = [1_000_000_000, 1_000_000, 1_000, 1][round];
                DateTime::from_timestamp(secs, nanos / unit * unit).unwrap()
            })
    }

    proptest! {
        #[test]
        fn pages_of_posts_render_as_serde_renders_them(
            items in prop::collection::vec(
                (1..i64::MAX, text(), instant(), text(), text()),
                0..25,
            ),
            cursor in prop::option::of(text()),
        ) {
            let page = Page {
                items: items
                    .into_iter()
                    .map(|(id, body, at, handle, name)| post(id, body, at, handle, name))
                    .collect(),
                next_cursor: cursor,
            };
            let mut fast = Vec::new();
            page.render(&mut fast).unwrap();
            prop_assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&page).unwrap()
            );
        }
    }

    #[test]
    fn escaping_is_found_in_every_position_of_a_block() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let clean = "a".repeat(len);
            assert!(!needs_escaping(clean.as_bytes()));
            for at in 0..len {
                for bad in [b'"', b'\\', b'\n', 0u8] {
                    let mut bytes = clean.clone().into_bytes();
                    bytes[at] = bad;
                    assert!(needs_escaping(&bytes), "{len} {at} {bad}");
                }
            }
        }
    }
}
