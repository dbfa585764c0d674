//! The JavaScript response: a small script that fires pixels. URLs are written
//! as string literals in which only URL-safe ASCII appears unescaped, so no
//! configured or requested URL can end the literal, the script or the page.

use crate::config::PixelFormat;

/// Pixels a script will fire, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// Each pixel's form and URL (macros already filled in).
    pixels: Vec<(PixelFormat, String)>,
}

const PRELUDE: &str = "(function(){var d=document;\
function i(u){var m=new Image();m.src=u;}\
function s(u){var e=d.createElement(\"script\");e.async=true;e.src=u;\
(d.body||d.head||d.documentElement).appendChild(e);}\n";

impl Script {
    pub fn push(&mut self, format: PixelFormat, url: String) {
        self.pixels.push((format, url));
    }

    pub fn len(&self) -> usize {
        self.pixels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The script text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(
            PRELUDE.len() + 16 + self.pixels.iter().map(|p| p.1.len() + 8).sum::<usize>(),
        );
        out.push_str(PRELUDE);
        for (format, url) in &self.pixels {
            out.push_str(match format {
                PixelFormat::Img => "i(",
                PixelFormat::Js => "s(",
            });
            js_string(&mut out, url);
            out.push_str(");\n");
        }
        out.push_str("})();\n");
        out
    }
}

/// Writes `s` as a double-quoted JavaScript string literal. Letters, digits
/// and the URL punctuation that cannot close a literal or a script element
/// pass through; everything else becomes `\uXXXX`.
pub fn js_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        let plain = c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&()*+,;=%{}|^` ".contains(c);
        if plain {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> String {
        let mut o = String::new();
        js_string(&mut o, s);
        o
    }

    #[test]
    fn urls_pass_through_readably() {
        assert_eq!(
            lit("https://a.example/p?x=1&y=2#f"),
            "\"https://a.example/p?x=1&y=2#f\""
        );
    }

    #[test]
    fn nothing_can_break_out_of_the_literal() {
        let hostile = "\"';</script><script>alert(1)</script>\\\n\r\u{2028}\u{2029}<!--\u{1F600}";
        let l = lit(hostile);
        for bad in [
            "\"'", "<", ">", "'", "\\\"", "\n", "\r", "\u{2028}", "\u{2029}",
        ] {
            assert!(!l[1..l.len() - 1].contains(bad), "{bad:?} escaped into {l}");
        }
        // JSON reads \uXXXX (with surrogate pairs) the way JavaScript does.
        let back: String = serde_json::from_str(&l).unwrap();
        assert_eq!(back, hostile);
    }

    #[test]
    fn a_script_fires_images_and_scripts_in_order() {
        let mut s = Script::default();
        s.push(PixelFormat::Img, "https://a.example/i".into());
        s.push(PixelFormat::Js, "https://b.example/s.js".into());
        let text = s.render();
        let i = text.find("i(\"https://a.example/i\");").unwrap();
        let j = text.find("s(\"https://b.example/s.js\");").unwrap();
        assert!(i < j);
        assert!(text.starts_with("(function(){"));
        assert!(text.trim_end().ends_with("})();"));
    }
}
