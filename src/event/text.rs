//! What free text from a request may hold before it goes into an event:
//! no control characters (PostgreSQL's `jsonb` refuses `\u0000`, terminals
//! and log viewers act on the rest) and no invisible Unicode format or
//! separator characters (bidi overrides such as U+202E, zero-width
//! characters, U+2028/U+2029, the BOM), which can make a report show text
//! other than what is stored.

/// True when `s` holds none of the characters above.
pub fn is_plain(s: &str) -> bool {
    // Printable ASCII (what user agents and referers nearly always are) is
    // settled by one pass over the bytes with no early exit, which the
    // compiler vectorizes; the character-by-character check was 4% of a
    // serving thread's samples.
    let printable = s
        .as_bytes()
        .iter()
        .fold(true, |all, &b| all & (b.wrapping_sub(0x20) < 0x5f));
    printable || !s.chars().any(is_hidden)
}

/// `s` with each of the characters above replaced by U+FFFD, so that a
/// header pixeld records (`user_agent`, `referer`) shows what it held
/// without acting on a reader; borrowed when there is none.
pub fn plain(s: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if is_plain(&s) {
        return s;
    }
    let replaced = s
        .chars()
        .map(|c| if is_hidden(c) { '\u{FFFD}' } else { c })
        .collect();
    std::borrow::Cow::Owned(replaced)
}

/// Control (Cc), format (Cf) and line/paragraph separator (Zl, Zp)
/// characters.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}')
}

/// The longest `cachebuster` kept; ad servers send a number of a few digits.
pub const MAX_CACHEBUSTER: usize = 64;

/// A cachebuster is printable ASCII (no space) of at most [`MAX_CACHEBUSTER`].
pub fn is_cachebuster(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CACHEBUSTER && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_agrees_with_the_character_check() {
        let by_chars = |s: &str| !s.chars().any(is_hidden);
        let mut samples: Vec<String> = (0u8..=0x7f)
            .map(|b| format!("Mozilla/5.0 {}x", b as char))
            .collect();
        samples.extend(
            ["", "é", "a\u{200B}b", "\u{85}", "日本語", "x\u{7f}", " ~"]
                .iter()
                .map(|s| s.to_string()),
        );
        for s in &samples {
            assert_eq!(is_plain(s), by_chars(s), "{s:?}");
        }
    }

    #[test]
    fn hidden_characters_are_refused_and_ordinary_text_kept() {
        for bad in [
            "\u{0}",
            "a\u{202E}b",
            "x\u{2028}",
            "\u{FEFF}x",
            "z\u{200B}",
            "\u{7f}",
            "\t",
        ] {
            assert!(!is_plain(bad), "{bad:?}");
        }
        for good in ["plain", "José Müller", "日本語", "emoji 🎉", "a-b_c.d e"] {
            assert!(is_plain(good), "{good:?}");
        }
        assert_eq!(
            plain("Mozilla\t5.0\u{202E}\u{FEFF}".into()),
            "Mozilla\u{FFFD}5.0\u{FFFD}\u{FFFD}"
        );
        assert!(matches!(
            plain("José 🎉".into()),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(is_cachebuster("1764180000123"));
        assert!(is_cachebuster(&"9".repeat(64)));
        assert!(!is_cachebuster(&"9".repeat(65)));
        for bad in ["\u{0}", "a b", "é", ""] {
            assert!(!is_cachebuster(bad), "{bad:?}");
        }
    }
}
