//! Keeping configuration values out of messages. A problem report, a log
//! line and the answer of `POST /-/reload` say which key and what kind of
//! problem, never the value: a value may be a password put in the wrong
//! key, a secret given as a string where a list was expected, or a line of
//! the file that holds one. Each message is scrubbed twice: of the value of
//! the key it is about (whatever its length or type), and of every value
//! that is a secret or long enough to be one (wherever it shows).

use std::fmt;

/// Strings this long are scrubbed from every message, whatever their key:
/// shorter ones are words and numbers that messages use themselves.
const LONG: usize = 16;

/// Strings at secret keys this long are scrubbed from every message.
const SECRET_MIN: usize = 4;

/// The values to keep out of messages, from a config's merged table (the
/// file, the environment's overrides and the secret files' contents).
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a value containing another is replaced whole.
    values: Vec<String>,
}

impl fmt::Debug for Redactor {
    /// Never the values themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// Adds the strings of `table` that are secrets or long.
    pub fn add(&mut self, table: &toml::Table) {
        for (key, value) in table {
            collect(value, is_secret_key(&[key]), &[key], &mut self.values);
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.values.dedup();
    }

    /// `text` without any of the values, each replaced by its length.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            out = scrub_string(&out, v, 0);
        }
        out
    }
}

/// Keys whose values are secrets: the cookie and click-id signing secrets,
/// the admin token, the API keys' secrets, the destinations' tokens, and every librdkafka property (passwords, keys).
fn is_secret_key(path: &[&str]) -> bool {
    matches!(
        path,
        ["cookie", "secret" | "previous_secrets", ..]
            | ["server", "admin_token", ..]
            | ["api_keys", "secret", ..]
            | ["destinations", "token", ..]
            | ["kafka", "librdkafka", ..]
    ) || path.last().is_some_and(|k| k.ends_with("_file"))
}

/// Keys whose values are names an operator needs in a message to act on
/// it (which topic has the wrong partition count, which group, which
/// address): never secrets, never scrubbed for their length.
fn is_name_key(path: &[&str]) -> bool {
    matches!(
        path,
        ["kafka", "topics", ..]
            | ["kafka", "brokers"]
            | ["attribution", "group_id" | "listen"]
            | ["server", "listen" | "admin_listen" | "data_dir"]
    )
}

fn collect(value: &toml::Value, secret: bool, path: &[&str], out: &mut Vec<String>) {
    if !secret && is_name_key(path) {
        return;
    }
    match value {
        toml::Value::String(s)
            if s.chars().count() >= LONG || (secret && s.len() >= SECRET_MIN) =>
        {
            out.push(s.clone())
        }
        toml::Value::Array(items) => {
            for item in items {
                collect(item, secret, path, out);
            }
        }
        toml::Value::Table(t) => {
            for (key, value) in t {
                let mut path = path.to_vec();
                path.push(key);
                collect(value, secret || is_secret_key(&path), &path, out);
            }
        }
        _ => {}
    }
}

/// `message` about the key holding `value`, without that value: a string
/// of any length, quoted as serde and `{:?}` quote it (and bare when it is
/// long enough not to be a word of the message), a number or a boolean as
/// a whole token.
pub fn scrub_own(message: &str, value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => scrub_string(message, s, SECRET_MIN),
        toml::Value::Integer(n) => scrub_token(message, &n.to_string(), "<number>"),
        toml::Value::Float(x) => scrub_token(message, &x.to_string(), "<number>"),
        toml::Value::Boolean(b) => scrub_token(message, &b.to_string(), "<boolean>"),
        toml::Value::Datetime(d) => scrub_token(message, &d.to_string(), "<datetime>"),
        // A list's or table's strings (a list of secrets): its numbers are
        // ids that a message counts, not quotes.
        toml::Value::Array(items) => strings(items.iter(), message),
        toml::Value::Table(t) => strings(t.values(), message),
    }
}

fn strings<'a>(values: impl Iterator<Item = &'a toml::Value>, message: &str) -> String {
    values.fold(message.to_string(), |m, v| match v {
        toml::Value::String(_) | toml::Value::Array(_) | toml::Value::Table(_) => scrub_own(&m, v),
        _ => m,
    })
}

/// Replaces `s` quoted (`"…"`, with `{:?}`'s escapes, and in backticks), and
/// bare when it has at least `bare_min` bytes (0: any length).
fn scrub_string(message: &str, s: &str, bare_min: usize) -> String {
    if s.is_empty() {
        return message.to_string();
    }
    let placeholder = characters(s.chars().count());
    let mut out = message
        .replace(&format!("{s:?}"), &placeholder)
        .replace(&format!("`{s}`"), &placeholder);
    if s.len() >= bare_min {
        out = out.replace(s, &placeholder);
    }
    out
}

/// The placeholder of a string of `n` characters.
pub fn characters(n: usize) -> String {
    if n == 1 {
        "<1 character>".into()
    } else {
        format!("<{n} characters>")
    }
}

/// Replaces `token` where it stands alone (not part of a longer number or
/// word), bare or in backticks.
fn scrub_token(message: &str, token: &str, placeholder: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(message.len());
    let mut from = 0;
    for (at, _) in message.match_indices(token) {
        if at < from {
            continue;
        }
        let before = message[..at].chars().next_back();
        let after = message[at + token.len()..].chars().next();
        // A `.` next to a number is a range (`1..=400`) or a decimal.
        let alone = !before.is_some_and(|c| word(c) || c == '.')
            && !after.is_some_and(|c| word(c) || c == '.');
        if alone {
            out.push_str(&message[from..at]);
            out.push_str(placeholder);
            from = at + token.len();
        }
    }
    out.push_str(&message[from..]);
    out.replace(&format!("`{placeholder}`"), placeholder)
}

/// The value at `path` (`cookie.previous_secrets[1]`,
/// `kafka.librdkafka."sasl.password"`) of `table`, if there is one.
pub fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = split(path).into_iter();
    let (first, index) = parts.next()?;
    let mut value = index_into(table.get(&first)?, &index)?;
    for (key, index) in parts {
        value = index_into(value.as_table()?.get(&key)?, &index)?;
    }
    Some(value)
}

fn index_into<'a>(value: &'a toml::Value, index: &[usize]) -> Option<&'a toml::Value> {
    index
        .iter()
        .try_fold(value, |v, &i| v.as_array().and_then(|a| a.get(i)))
}

/// `a.b[1]."c.d"` as `[(a, []), (b, [1]), (c.d, [])]`.
fn split(path: &str) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let (key, tail) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (
                quoted[..end].to_string(),
                &quoted[(end + 1).min(quoted.len())..],
            )
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        let mut index = Vec::new();
        let mut tail = tail;
        while let Some(inner) = tail.strip_prefix('[') {
            let end = inner.find(']').unwrap_or(inner.len());
            index.extend(inner[..end].parse::<usize>().ok());
            tail = &inner[(end + 1).min(inner.len())..];
        }
        out.push((key, index));
        rest = tail.strip_prefix('.').unwrap_or(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_values_go_whatever_their_type_and_bounds_stay() {
        let s = toml::Value::String("7e57c00c1e5ec7e7".into());
        assert_eq!(
            scrub_own(
                "invalid type: string \"7e57c00c1e5ec7e7\", expected a sequence",
                &s
            ),
            "invalid type: string <16 characters>, expected a sequence"
        );
        let n = toml::Value::Integer(0);
        assert_eq!(
            scrub_own(
                "0 is outside 1..=400 (browsers cap cookies at 400 days)",
                &n
            ),
            "<number> is outside 1..=400 (browsers cap cookies at 400 days)"
        );
        let n = toml::Value::Integer(5);
        assert_eq!(
            scrub_own("invalid type: integer `5`, expected a string", &n),
            "invalid type: integer <number>, expected a string"
        );
        let short = toml::Value::String("2".into());
        assert_eq!(
            scrub_own("\"2\" is not one of all, 1, 0 (2 ways)", &short),
            "<1 character> is not one of all, 1, 0 (2 ways)"
        );
    }

    #[test]
    fn secrets_and_long_values_go_from_every_message() {
        let table: toml::Table = toml::from_str(
            "[cookie]\nname = \"uid\"\nprevious_secrets = [\"abcd\"]\n[kafka.librdkafka]\n\"sasl.password\" = \"pw12\"\n[server]\npublic_url = \"https://px.example.com/long\"\n",
        )
        .unwrap();
        let mut r = Redactor::default();
        r.add(&table);
        assert_eq!(
            r.redact("pw12 abcd uid https://px.example.com/long"),
            "<4 characters> <4 characters> uid <27 characters>"
        );
        assert!(!format!("{r:?}").contains("pw12"));
    }

    #[test]
    fn paths_find_their_values() {
        let table: toml::Table = toml::from_str(
            "[cookie]\nprevious_secrets = [\"a\", \"b\"]\n[kafka.librdkafka]\n\"sasl.password\" = \"pw\"\n[[line_items]]\nid = 3\n",
        )
        .unwrap();
        let s = |p| lookup(&table, p).and_then(|v| v.as_str().map(String::from));
        assert_eq!(s("cookie.previous_secrets[1]").as_deref(), Some("b"));
        assert_eq!(
            s("kafka.librdkafka.\"sasl.password\"").as_deref(),
            Some("pw")
        );
        assert_eq!(
            lookup(&table, "line_items[0].id").and_then(|v| v.as_integer()),
            Some(3)
        );
        assert!(lookup(&table, "cookie.nope").is_none());
    }

    /// A message naming topics (the member's co-partitioning refusal) must
    /// keep them: they are what the operator fixes.
    #[test]
    fn names_stay_in_messages() {
        let table: toml::Table = toml::from_str(
            "[kafka.topics]\nimpressions = \"pixel.impressions.eu\"\n[cookie]\nsecret = \"0123456789abcdef0123\"\n",
        )
        .unwrap();
        let mut r = Redactor::default();
        r.add(&table);
        let out = r.redact("pixel.impressions.eu: 6, secret 0123456789abcdef0123");
        assert!(out.starts_with("pixel.impressions.eu: 6"), "{out}");
        assert!(!out.contains("0123456789abcdef0123"), "{out}");
    }
}
