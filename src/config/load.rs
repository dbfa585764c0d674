//! Reading the file: every problem is collected with its key path, so an
//! operator fixes a broken file in one pass instead of one error per start.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::redact::{lookup, scrub_own, Redactor};
use super::Config;

/// One thing wrong with the file, at `path` (`conversion_pixels[1].repeat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything wrong with a config file.
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The file, for the first line of the report.
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.source,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the file at `path`, with this process's
/// `PIXELD_<SECTION>__<KEY>` overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: source.clone(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read the file: {e}; pass another one with --config PATH"),
        }],
    })?;
    parse_with_env(&text, &source, std::env::vars())
}

/// Parses and validates TOML text; `source` names it in the report.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, source, std::iter::empty())
}

const SECTIONS: &[&str] = &[
    "server",
    "cookie",
    "redirect",
    "kafka",
    "network",
    "advertisers",
    "line_items",
    "impression_trackers",
    "click_trackers",
    "conversion_pixels",
    "segments",
    "attribution",
    "journal",
    "ivt",
    "privacy",
    "api_keys",
    "sync",
    "forward",
    "destinations",
];

/// [`parse`], with `vars` as the environment's overrides applied over the
/// file and secrets read from their `*_file` keys.
pub fn parse_with_env(
    text: &str,
    source: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        source: source.to_string(),
        problems,
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return Err(fail(vec![syntax_error(&e, text)])),
    };
    let (from_env, mut problems) = super::env::overlay(&mut table, vars);
    // As written (the `*_file` keys' paths included), then with the secret
    // files' contents: what the messages must not show.
    let written = table.clone();
    problems.extend(super::env::secret_files(&mut table));
    let merged = table.clone();
    let mut redactor = Redactor::default();
    redactor.add(&written);
    redactor.add(&merged);
    let mut cfg = typed(table, &mut problems);
    read_ivt_file(&mut cfg, &mut problems);
    parse_destination_urls(&mut cfg, &mut problems);
    problems.extend(super::validate::validate(&cfg));
    for p in &mut problems {
        p.message = scrub(&p.message, &p.path, [&written, &merged], &redactor);
        // A problem with a value the environment set says which variable did.
        if let Some((_, var)) = from_env.iter().find(|(k, _)| *k == p.path) {
            p.message.push_str(&format!(" (set by {var})"));
        }
    }
    cfg.from_env = from_env;
    cfg.redactor = redactor;
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(fail(problems))
    }
}

/// The table's sections typed into a [`Config`]; a section that does not
/// fit, or is unknown, is a problem and keeps its defaults.
fn typed(table: toml::Table, problems: &mut Vec<Problem>) -> Config {
    let mut cfg = Config::default();
    for (key, value) in table {
        let p = &mut *problems;
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        match key.as_str() {
            "server" => set(&mut cfg.server, section(value, &key, p)),
            "cookie" => set(&mut cfg.cookie, section(value, &key, p)),
            "redirect" => set(&mut cfg.redirect, section(value, &key, p)),
            "kafka" => set(&mut cfg.kafka, section(value, &key, p)),
            "network" => set(&mut cfg.network, section(value, &key, p)),
            "attribution" => set(&mut cfg.attribution, section(value, &key, p)),
            "journal" => set(&mut cfg.journal, section(value, &key, p)),
            "ivt" => set(&mut cfg.ivt, section(value, &key, p)),
            "privacy" => set(&mut cfg.privacy, section(value, &key, p)),
            "sync" => set(&mut cfg.sync, section(value, &key, p)),
            "forward" => set(&mut cfg.forward, section(value, &key, p)),
            "advertisers" => cfg.advertisers = list(value, &key, p),
            "line_items" => cfg.line_items = list(value, &key, p),
            "impression_trackers" => cfg.impression_trackers = list(value, &key, p),
            "click_trackers" => cfg.click_trackers = list(value, &key, p),
            "conversion_pixels" => cfg.conversion_pixels = list(value, &key, p),
            "segments" => cfg.segments = list(value, &key, p),
            "api_keys" => cfg.api_keys = list(value, &key, p),
            "destinations" => cfg.destinations = list(value, &key, p),
            _ => p.push(Problem {
                path: key.clone(),
                message: format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            }),
        }
    }
    cfg
}

/// `ivt.file`, when set, read with the shipped list into `ivt.list`.
fn read_ivt_file(cfg: &mut Config, problems: &mut Vec<Problem>) {
    if let Some(file) = &cfg.ivt.file {
        match super::IvtList::load(Some(file)) {
            Ok(list) => cfg.ivt.list = list,
            Err(e) => problems.push(Problem {
                path: "ivt.file".into(),
                message: format!("{e}; fix the file or remove the key"),
            }),
        }
    }
}

/// Each `destinations[i].url` parsed into its template.
fn parse_destination_urls(cfg: &mut Config, problems: &mut Vec<Problem>) {
    for (i, d) in cfg.destinations.iter_mut().enumerate() {
        match super::template::Template::parse(&d.url) {
            Ok(t) => d.template = t,
            Err(message) => problems.push(Problem {
                path: format!("destinations[{i}].url"),
                message,
            }),
        }
    }
}

/// `message` about the key at `path` without its value (looked up as
/// written, then with the secret files read) and without any value
/// `redactor` holds.
fn scrub(message: &str, path: &str, tables: [&toml::Table; 2], redactor: &Redactor) -> String {
    let own = tables.iter().find_map(|t| lookup(t, path));
    let message = match own {
        Some(v) => scrub_own(message, v),
        None => message.to_string(),
    };
    redactor.redact(&message)
}

/// Where and what, never the text: the parser's own report quotes the
/// line, and the line may hold a secret.
fn syntax_error(e: &toml::de::Error, text: &str) -> Problem {
    let at = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    let what: Vec<&str> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Problem {
        path: String::new(),
        message: format!("not valid TOML{at}: {}", what.join("; ")),
    }
}

/// Deserializes one table, collecting every bad key: after each error the
/// offending key is set aside and the rest tried again.
fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut value = value;
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            // Keep what did parse, so validation can report on it too.
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let inner = err.path().to_string();
        let full = if inner == "." || inner.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{inner}")
        };
        let message = err.into_inner().to_string();
        let message = message.lines().next().unwrap_or_default().to_string();
        problems.push(Problem {
            path: full,
            message,
        });
        // Set the key aside and look for more problems in the others.
        let key = inner
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_string();
        let removed = match value.as_table_mut() {
            Some(table) if !key.is_empty() && key != "?" => table.remove(&key).is_some(),
            _ => false,
        };
        if !removed {
            return None;
        }
    }
    None
}

/// An array of tables, element by element, so one bad entry does not hide
/// the problems of the others.
fn list<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| section(item, &format!("{path}[{i}]"), problems))
            .collect(),
        _ => {
            problems.push(Problem {
                path: path.to_string(),
                message: format!("must be an array of tables: write each entry as [[{path}]]"),
            });
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "test.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_empty_file_is_a_valid_config_with_the_documented_defaults() {
        let cfg = parse("", "empty").unwrap();
        assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(cfg.server.max_query_bytes, 8192);
        assert_eq!(cfg.cookie.name, "uid");
        assert_eq!(cfg.cookie.max_age_days, 365);
        assert!(cfg.kafka.brokers.is_empty());
        assert_eq!(cfg.kafka.compression, super::super::KafkaCompression::Lz4);
        assert_eq!(cfg.kafka.acks, super::super::KafkaAcks::All);
        assert_eq!(cfg.journal.durability, super::super::Durability::Journal);
        assert_eq!(cfg.kafka.topics.impressions, "pixel.impressions");
        assert_eq!(cfg.kafka.topics.attributions, "pixel.attributions");
    }

    #[test]
    fn conversion_pixel_defaults_follow_the_product_page() {
        let cfg = parse(
            "[[advertisers]]\nid = 1\n[[conversion_pixels]]\nid = 2\nadvertiser = 1\n",
            "t",
        )
        .unwrap();
        let p = &cfg.conversion_pixels[0];
        assert_eq!(p.trigger, super::super::Trigger::Hybrid);
        assert_eq!(p.post_view_minutes, 1440);
        assert_eq!(p.post_click_minutes, 20160);
        assert_eq!(p.repeat, super::super::Repeat::OnePerUser);
    }

    #[test]
    fn cookie_secrets_must_be_128_bit_hex_and_are_never_echoed() {
        let mut p = problems(
            "[cookie]\nsecret = \"hunter2\"\nprevious_secrets = [\"7e57c00c1e5ec7e77e57c00c1e5ec7e7\", \"xyz\"]\n",
        );
        p.sort_by_key(|x| !x.starts_with("cookie.secret"));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("cookie.secret: must be 32 hex characters"),
            "{p:?}"
        );
        assert!(p[0].contains("openssl rand -hex 16"), "{p:?}");
        assert!(
            p[1].starts_with("cookie.previous_secrets[1]: must be 32 hex"),
            "{p:?}"
        );
        assert!(
            !p.iter().any(|x| x.contains("hunter2") || x.contains("xyz")),
            "{p:?}"
        );
        assert!(problems("[cookie]\nsecret = \"7E57C00C1E5EC7E77E57C00C1E5EC7E7\"\n").is_empty());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = problems("[server\nlisten = 1");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("not valid TOML"), "{p:?}");
        assert!(p[0].contains("line 1"), "{p:?}");
    }

    #[test]
    fn every_bad_key_of_a_section_is_reported() {
        let p = problems("[cookie]\nname = 5\nmax_age_days = \"x\"\nflavour = 1\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter().any(|x| x.starts_with("cookie.name: invalid type")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("cookie.max_age_days: invalid type")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("cookie.flavour: unknown field")),
            "{p:?}"
        );
    }

    #[test]
    fn references_ranges_and_duplicates() {
        let p = problems(
            r#"
[[advertisers]]
id = 1
[[advertisers]]
id = 1
[[line_items]]
id = 3
advertiser = 1
conversion_pixels = [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]
[[impression_trackers]]
id = 4
line_item = 3
publisher = 1
add_segments = [77]
[[segments]]
id = 5
expire_minutes = 300000
[cookie]
max_age_days = 0
[redirect]
allowed_hosts = ["exa mple.com"]
"#,
        );
        let has = |s: &str| p.iter().any(|x| x.contains(s));
        assert!(has("advertisers[1].id: <number> is used twice"), "{p:?}");
        assert!(has("line_items[0].conversion_pixels: 21 pixels attached; a line item can have at most 20"), "{p:?}");
        assert!(
            has("impression_trackers[0].add_segments[0]: <number> is not defined"),
            "{p:?}"
        );
        assert!(
            has("segments[0].expire_minutes: <number> is above the maximum 259200"),
            "{p:?}"
        );
        assert!(
            has("cookie.max_age_days: <number> is outside 1..=400"),
            "{p:?}"
        );
        assert!(
            has("redirect.allowed_hosts[0]: <12 characters> is not a host name"),
            "{p:?}"
        );
    }

    #[test]
    fn typed_values_name_their_forms() {
        let p = problems(
            "[kafka]\nreplication_factor = 0\nacks = \"2\"\n[journal]\ndurability = \"disk\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n[[advertisers]]\nid = 1\n[[conversion_pixels]]\nid = 2\nadvertiser = 1\nrepeat = \"twice\"\n",
        );
        let has = |s: &str| p.iter().any(|x| x.starts_with(s));
        assert!(
            has("kafka.replication_factor: <number> is outside 1..=32767"),
            "{p:?}"
        );
        assert!(
            has("kafka.acks: <1 character> is not one of all, 1, 0"),
            "{p:?}"
        );
        assert!(
            has("journal.durability: <4 characters> is not one of journal, fsync, memory"),
            "{p:?}"
        );
        assert!(
            has("server.trusted_proxies[1]: <4 characters> is not a network"),
            "{p:?}"
        );
        assert!(
            has("conversion_pixels[0].repeat: <5 characters> is not a repeat mode"),
            "{p:?}"
        );
    }

    #[test]
    fn an_entry_missing_a_required_key_says_which() {
        let p = problems("[[impression_trackers]]\nid = 1\npublisher = 2\n");
        assert!(
            p.iter()
                .any(|x| x.starts_with("impression_trackers[0]: missing field `line_item`")),
            "{p:?}"
        );
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff";

    fn report(text: &str, vars: &[(&str, &str)]) -> String {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        match parse_with_env(text, "t.toml", vars) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_syntax_error_names_the_line_and_column_but_never_quotes_it() {
        for text in [
            "[kafka.librdkafka]\n\"sasl.password\" = \"Tr0ub4dor\\&3\"\n",
            "[cookie]\nsecret = \"Tr0ub4dor&3\n",
            "[cookie]\nsecret = Tr0ub4dor&3\n",
            "[cookie]\nprevious_secrets = [\"Tr0ub4dor&3\", Tr0ub4dor&3]\n",
            "[server]\nadmin_token = \"Tr0ub4dor&3\" \"Tr0ub4dor&3\"\n",
            "[kafka.librdkafka]\n\"sasl.password\" = '''Tr0ub4dor&3\n",
        ] {
            let e = report(text, &[]);
            assert!(e.contains("not valid TOML at line "), "{e}");
            assert!(!e.contains("Tr0ub4dor"), "{e}");
        }
    }

    #[test]
    fn a_type_error_says_the_kind_and_the_length_never_the_value() {
        let e = report("", &[("PIXELD_COOKIE__PREVIOUS_SECRETS", HEX)]);
        assert!(
            e.contains("cookie.previous_secrets: invalid type: string <32 characters>, expected a sequence (set by PIXELD_COOKIE__PREVIOUS_SECRETS)"),
            "{e}"
        );
        for (text, value) in [
            (format!("[cookie]\nsecret = [\"{HEX}\"]\n"), HEX),
            (format!("[cookie]\nprevious_secrets = \"{HEX}\"\n"), HEX),
            (format!("[cookie]\nsecret = \"{HEX}0\"\n"), HEX),
            (
                "[kafka.librdkafka]\n\"sasl.password\" = [\"hunter2\"]\n".into(),
                "hunter2",
            ),
            ("[kafka]\nacks = \"hunter2\"\n".into(), "hunter2"),
            ("[kafka]\nclient_id = 1234567\n".into(), "1234567"),
            ("[server]\nlisten = \"hunter2:x\"\n".into(), "hunter2"),
            (
                "[server]\ntrusted_proxies = [\"hunter2\"]\n".into(),
                "hunter2",
            ),
            ("[cookie]\nmax_age_days = 1234567\n".into(), "1234567"),
            ("[cookie]\nname = \"hunter 2\"\n".into(), "hunter 2"),
        ] {
            let e = report(&text, &[]);
            assert!(!e.contains(value), "{text}: {e}");
            assert!(e.contains("1 problem"), "{text}: {e}");
        }
    }
}
