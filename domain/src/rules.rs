//! Input rules shared by the aggregates and the API (the API checks a password before
//! hashing it; everything else is checked by the aggregate that owns it).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::DomainError;

pub const HANDLE_MAX: usize = 30;
pub const DISPLAY_NAME_MAX: usize = 50;
pub const POST_BODY_MAX: usize = 280;
pub const PASSWORD_MIN: usize = 8;
pub const PASSWORD_MAX: usize = 128;

/// A handle is 1–30 of `[A-Za-z0-9_]`.
pub fn validate_handle(handle: &str) -> Result<(), DomainError> {
    if handle.is_empty() || handle.len() > HANDLE_MAX {
        return Err(DomainError::InvalidHandle(format!(
            "must be 1 to {HANDLE_MAX} characters"
        )));
    }
    if !handle
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(DomainError::InvalidHandle(
            "may contain only letters A-Z, digits and underscore".into(),
        ));
    }
    Ok(())
}

/// Handles are unique case-insensitively; this is the key they are unique under.
pub fn normalize_handle(handle: &str) -> String {
    handle.to_ascii_lowercase()
}

/// A display name is 1–50 characters after NFC normalisation and trimming, with no
/// control or format characters (bidi overrides, zero-width spaces: they let one name pass
/// for another) and at least one visible character (a letter, digit, punctuation or
/// symbol). Returns the normalised, trimmed name, which is what gets stored.
pub fn validate_display_name(name: &str) -> Result<String, DomainError> {
    let normalized: String = name.nfc().collect();
    let trimmed = normalized.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > DISPLAY_NAME_MAX {
        return Err(DomainError::InvalidDisplayName(format!(
            "must be 1 to {DISPLAY_NAME_MAX} characters after trimming"
        )));
    }
    if trimmed.chars().any(|c| {
        c.is_control() || c.general_category() == unicode_properties::GeneralCategory::Format
    }) {
        return Err(DomainError::InvalidDisplayName(
            "must not contain control or format characters (such as bidi overrides or \
             zero-width characters)"
                .into(),
        ));
    }
    let visible = |c: char| {
        matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter
                | GeneralCategoryGroup::Number
                | GeneralCategoryGroup::Punctuation
                | GeneralCategoryGroup::Symbol
        ) && !INVISIBLE_LETTERS.contains(&c)
    };
    if !trimmed.chars().any(visible) {
        return Err(DomainError::InvalidDisplayName(
            "must contain at least one visible character".into(),
        ));
    }
    Ok(trimmed.to_string())
}

/// Letters (category Lo) that render as blank: Hangul fillers and the like.
const INVISIBLE_LETTERS: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];

/// The form a password is hashed and checked in: NFKC (as RFC 8265's OpaqueString profile
/// suggests), so the same password typed on two keyboards is the same password.
pub fn normalize_password(password: &str) -> String {
    password.nfkc().collect()
}

/// A post body is 1–280 Unicode scalar values after trimming, without U+0000 (which
/// PostgreSQL's jsonb, the event log, cannot store). Returns the trimmed body.
pub fn validate_post_body(body: &str) -> Result<String, DomainError> {
    let trimmed = body.trim();
    let len = trimmed.chars().count();
    if len == 0 || len > POST_BODY_MAX {
        return Err(DomainError::InvalidPostBody(format!(
            "must be 1 to {POST_BODY_MAX} characters after trimming, got {len}"
        )));
    }
    if trimmed.contains('\0') {
        return Err(DomainError::InvalidPostBody(
            "must not contain the NUL character (U+0000)".into(),
        ));
    }
    Ok(trimmed.to_string())
}

/// A password is 8–128 characters.
pub fn validate_password(password: &str) -> Result<(), DomainError> {
    let len = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(DomainError::InvalidPassword(format!(
            "must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handles() {
        assert!(validate_handle("a").is_ok());
        assert!(validate_handle("Alice_99").is_ok());
        assert!(validate_handle(&"x".repeat(30)).is_ok());
        assert!(validate_handle(&"x".repeat(31)).is_err());
        assert!(validate_handle("").is_err());
        assert!(validate_handle("al ice").is_err());
        assert!(validate_handle("alice!").is_err());
        assert!(validate_handle("ålice").is_err());
        assert_eq!(normalize_handle("AliCe_1"), "alice_1");
    }

    #[test]
    fn passwords_are_compared_in_nfkc() {
        assert_eq!(
            normalize_password("e\u{0301}"),
            normalize_password("\u{e9}")
        );
        assert_eq!(normalize_password("ｐａｓｓ"), "pass");
        assert_eq!(normalize_password("plain ascii"), "plain ascii");
    }

    #[test]
    fn display_names() {
        assert_eq!(validate_display_name("  Alice  ").unwrap(), "Alice");
        assert!(validate_display_name("   ").is_err());
        assert!(validate_display_name(&"é".repeat(50)).is_ok());
        assert!(validate_display_name(&"é".repeat(51)).is_err());
        assert!(validate_display_name("a\u{7}b").is_err());
        assert!(validate_display_name("a\nb").is_err());
        // Bidi overrides, zero-width characters and names with nothing visible.
        assert!(validate_display_name("\u{202e}evil").is_err());
        assert!(validate_display_name("\u{200b}\u{200b}").is_err());
        assert!(validate_display_name("a\u{2066}b").is_err());
        assert!(validate_display_name("\u{3164}").is_err());
        assert!(validate_display_name("\u{0301}\u{0301}").is_err());
        assert!(validate_display_name("Zoë 🎉").is_ok());
        // Stored in NFC: a decomposed é is stored composed, and counts as one character.
        assert_eq!(validate_display_name("e\u{0301}").unwrap(), "\u{e9}");
        assert!(validate_display_name(&"e\u{0301}".repeat(50)).is_ok());
    }

    #[test]
    fn post_bodies() {
        assert_eq!(validate_post_body(" hi ").unwrap(), "hi");
        assert!(validate_post_body(" \n ").is_err());
        // 280 scalar values, each several bytes long, is still fine.
        assert!(validate_post_body(&"🦀".repeat(280)).is_ok());
        assert!(validate_post_body(&"🦀".repeat(281)).is_err());
        assert!(validate_post_body("a\0b").is_err());
    }

    #[test]
    fn passwords() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(128)).is_ok());
        assert!(validate_password(&"p".repeat(129)).is_err());
    }

    proptest! {
        #[test]
        fn valid_handles_are_accepted(h in "[A-Za-z0-9_]{1,30}") {
            prop_assert!(validate_handle(&h).is_ok());
        }

        #[test]
        fn handles_with_other_characters_are_refused(h in "[A-Za-z0-9_]{0,10}[^A-Za-z0-9_][A-Za-z0-9_]{0,10}") {
            prop_assert!(validate_handle(&h).is_err());
        }

        #[test]
        fn stored_body_is_trimmed_and_bounded(b in "\\PC{0,300}") {
            if let Ok(stored) = validate_post_body(&b) {
                prop_assert_eq!(stored.trim(), stored.as_str());
                let n = stored.chars().count();
                prop_assert!((1..=280).contains(&n));
            }
        }
    }
}
