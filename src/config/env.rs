//! What the file does not say itself: overrides from the environment
//! (`PIXELD_<SECTION>__<KEY>`, as containers and systemd units set them) and
//! secrets read from files (`*_file` keys), both applied to the TOML table
//! before it is typed, so every value is validated the same way.

use std::path::Path;

use super::load::Problem;

/// The prefix of every override: `PIXELD_KAFKA__BROKERS` sets
/// `kafka.brokers`, `PIXELD_KAFKA__TOPICS__IMPRESSIONS` sets
/// `kafka.topics.impressions`.
pub const PREFIX: &str = "PIXELD_";

/// A key set from the environment: (key path, variable name).
pub type FromEnv = (String, String);

/// Applies every `PIXELD_<SECTION>__<KEY>` of `vars` to `table`. A value is
/// read as a TOML value when it is one (`8192`, `true`, `"text"`,
/// `["a", "b"]`), else taken as a string (`0.0.0.0:8080`,
/// `k1:9092,k2:9092`). Variables without `__` (`PIXELD_LOG_FORMAT`) are
/// not config keys.
pub fn overlay(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> (Vec<FromEnv>, Vec<Problem>) {
    let mut applied = Vec::new();
    let mut problems = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem {
                path: name.clone(),
                message: "is not PIXELD_<SECTION>__<KEY>; e.g. PIXELD_KAFKA__BROKERS".into(),
            });
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if !set(table, &path, parsed) {
            problems.push(Problem {
                path: path.join("."),
                message: format!("{name} names a key inside a value that is not a table"),
            });
            continue;
        }
        applied.push((path.join("."), name));
    }
    (applied, problems)
}

/// Sets `path` in `table`, creating the tables on the way; false when a
/// part of the way is not a table.
fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
        {
            Some(t) => set(t, rest, value),
            None => false,
        },
    }
}

/// A secret file's contents, trimmed.
fn read_secret(key: &str, file: &toml::Value) -> Result<String, Problem> {
    let path = file.as_str().ok_or_else(|| Problem {
        path: key.into(),
        message: "must be a file path (a string)".into(),
    })?;
    std::fs::read_to_string(Path::new(path))
        .map(|text| text.trim().to_string())
        .map_err(|e| Problem {
            path: key.into(),
            // Not the path: it is a configuration value like any other.
            message: format!("cannot read the file: {e}; fix the path or its permissions"),
        })
}

/// Reads the secrets kept in files: `cookie.secret_file` (32 hex
/// characters), `cookie.previous_secrets_file` (one per line),
/// `server.admin_token_file`, `api_keys[i].secret_file`,
/// `destinations[i].token_file`, and in
/// `[kafka.librdkafka]` any `<property>_file` (e.g. `sasl.password_file`,
/// `ssl.key.password_file`), each replaced by its value. The values never
/// reach a log or `check-config`'s output.
pub fn secret_files(table: &mut toml::Table) -> Vec<Problem> {
    let mut problems = Vec::new();
    cookie_secret_files(table, &mut problems);
    admin_token_file(table, &mut problems);
    api_key_secret_files(table, &mut problems);
    destination_token_files(table, &mut problems);
    librdkafka_secret_files(table, &mut problems);
    problems
}

/// [`read_secret`], with a problem added to `problems` instead of returned.
fn read_or_report(key: &str, file: &toml::Value, problems: &mut Vec<Problem>) -> Option<String> {
    read_secret(key, file).map_err(|p| problems.push(p)).ok()
}

/// `cookie.secret_file` and `cookie.previous_secrets_file`.
fn cookie_secret_files(table: &mut toml::Table, problems: &mut Vec<Problem>) {
    if let Some(cookie) = table.get_mut("cookie").and_then(|c| c.as_table_mut()) {
        if let Some(file) = cookie.remove("secret_file") {
            if cookie.contains_key("secret") {
                problems.push(Problem {
                    path: "cookie.secret_file".into(),
                    message: "and cookie.secret are both set; keep one".into(),
                });
            } else if let Some(s) = read_or_report("cookie.secret_file", &file, problems) {
                cookie.insert("secret".into(), toml::Value::String(s));
            }
        }
        if let Some(file) = cookie.remove("previous_secrets_file") {
            if let Some(s) = read_or_report("cookie.previous_secrets_file", &file, problems) {
                let list = s
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| toml::Value::String(l.into()))
                    .collect();
                cookie.insert("previous_secrets".into(), toml::Value::Array(list));
            }
        }
    }
}

/// `server.admin_token_file`.
fn admin_token_file(table: &mut toml::Table, problems: &mut Vec<Problem>) {
    if let Some(server) = table.get_mut("server").and_then(|c| c.as_table_mut()) {
        if let Some(file) = server.remove("admin_token_file") {
            if server.contains_key("admin_token") {
                problems.push(Problem {
                    path: "server.admin_token_file".into(),
                    message: "and server.admin_token are both set; keep one".into(),
                });
            } else if let Some(s) = read_or_report("server.admin_token_file", &file, problems) {
                server.insert("admin_token".into(), toml::Value::String(s));
            }
        }
    }
}

/// `api_keys[i].secret_file`.
fn api_key_secret_files(table: &mut toml::Table, problems: &mut Vec<Problem>) {
    if let Some(keys) = table.get_mut("api_keys").and_then(|k| k.as_array_mut()) {
        for (i, key) in keys.iter_mut().enumerate() {
            let Some(key) = key.as_table_mut() else {
                continue;
            };
            if let Some(file) = key.remove("secret_file") {
                let at = format!("api_keys[{i}].secret_file");
                if key.contains_key("secret") {
                    problems.push(Problem {
                        path: at,
                        message: format!("and api_keys[{i}].secret are both set; keep one"),
                    });
                } else if let Some(s) = read_or_report(&at, &file, problems) {
                    key.insert("secret".into(), toml::Value::String(s));
                }
            }
        }
    }
}

/// `destinations[i].token_file`.
fn destination_token_files(table: &mut toml::Table, problems: &mut Vec<Problem>) {
    if let Some(list) = table.get_mut("destinations").and_then(|k| k.as_array_mut()) {
        for (i, d) in list.iter_mut().enumerate() {
            let Some(d) = d.as_table_mut() else {
                continue;
            };
            if let Some(file) = d.remove("token_file") {
                let at = format!("destinations[{i}].token_file");
                if d.contains_key("token") {
                    problems.push(Problem {
                        path: at,
                        message: format!("and destinations[{i}].token are both set; keep one"),
                    });
                } else if let Some(s) = read_or_report(&at, &file, problems) {
                    d.insert("token".into(), toml::Value::String(s));
                }
            }
        }
    }
}

/// Any `<property>_file` in `[kafka.librdkafka]`, set as `<property>`.
fn librdkafka_secret_files(table: &mut toml::Table, problems: &mut Vec<Problem>) {
    let librdkafka = table
        .get_mut("kafka")
        .and_then(|k| k.as_table_mut())
        .and_then(|k| k.get_mut("librdkafka"))
        .and_then(|l| l.as_table_mut());
    if let Some(l) = librdkafka {
        let files: Vec<String> = l.keys().filter(|k| k.ends_with("_file")).cloned().collect();
        for key in files {
            let file = l.remove(&key).expect("listed");
            let property = key.trim_end_matches("_file").to_string();
            if let Some(s) = read_or_report(&format!("kafka.librdkafka.{key}"), &file, problems) {
                l.insert(property, toml::Value::String(s));
            }
        }
    }
}

/// The README's table of every scalar key and its variable, generated from
/// the config structs' source (`src/config/mod.rs`): field names, types and
/// first doc line. `tests::the_readme_table_is_current` fails when the
/// README's copy is stale.
pub fn table() -> String {
    let src = include_str!("mod.rs");
    // Which struct is which section.
    let sections: Vec<(&str, String)> = [
        ("ServerConfig", "server"),
        ("CookieConfig", "cookie"),
        ("RedirectConfig", "redirect"),
        ("KafkaConfig", "kafka"),
        ("TopicsConfig", "kafka.topics"),
        ("AttributionConfig", "attribution"),
        ("JournalConfig", "journal"),
        ("IvtConfig", "ivt"),
        ("PrivacyConfig", "privacy"),
    ]
    .into_iter()
    .map(|(s, n)| (s, n.to_string()))
    .collect();
    let mut out = String::from("| key | variable | default and meaning |\n|---|---|---|\n");
    for (name, section) in sections {
        let start = src
            .find(&format!("pub struct {name} {{"))
            .unwrap_or_else(|| panic!("{name} not in src/config/mod.rs"));
        let body = &src[start..];
        let body = &body[..body.find("\n}").unwrap_or(body.len())];
        let mut doc: Vec<&str> = Vec::new();
        let mut skip = false;
        for line in body.lines().skip(1) {
            let line = line.trim();
            if let Some(d) = line.strip_prefix("///") {
                doc.push(d.trim());
                continue;
            }
            if line.starts_with("#[serde(skip") {
                skip = true;
                continue;
            }
            if let Some(field) = line.strip_prefix("pub ") {
                let (key, ty) = field.split_once(':').unwrap_or((field, ""));
                let ty = ty.trim().trim_end_matches(',');
                let scalar = !(ty.starts_with("Vec<")
                    || ty.starts_with("BTreeMap<")
                    || ty.ends_with("Config")
                    || ty == "AllowList"
                    || ty == "IvtList");
                if scalar && !skip {
                    let text = doc.join(" ");
                    let var = format!(
                        "{PREFIX}{}__{}",
                        section.to_ascii_uppercase().replace('.', "__"),
                        key.to_ascii_uppercase()
                    );
                    out.push_str(&format!(
                        "| `{section}.{key}` | `{var}` | {} |\n",
                        text.replace('|', "\\|")
                    ));
                }
                doc.clear();
                skip = false;
            } else if !line.starts_with("#[") {
                doc.clear();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_reach_typed_values_and_are_listed() {
        let text = "[kafka]\nbrokers = \"file:9092\"\n";
        let cfg = super::super::load::parse_with_env(
            text,
            "test",
            vars(&[
                ("PIXELD_KAFKA__BROKERS", "env-1:9092,env-2:9092"),
                ("PIXELD_SERVER__LISTEN", "127.0.0.1:18080"),
                ("PIXELD_SERVER__MAX_QUERY_BYTES", "4096"),
                ("PIXELD_COOKIE__SECURE", "false"),
                ("PIXELD_KAFKA__TOPICS__IMPRESSIONS", "imps"),
                ("PIXELD_LOG_FORMAT", "json"),
                ("OTHER__THING", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.kafka.brokers, "env-1:9092,env-2:9092");
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(cfg.server.max_query_bytes, 4096);
        assert!(!cfg.cookie.secure);
        assert_eq!(cfg.kafka.topics.impressions, "imps");
        let keys: Vec<&str> = cfg.from_env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cookie.secure",
                "kafka.brokers",
                "kafka.topics.impressions",
                "server.listen",
                "server.max_query_bytes"
            ]
        );
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let e = super::super::load::parse_with_env(
            "",
            "test",
            vars(&[
                ("PIXELD_SERVER__MAX_QUERY_BYTES", "lots"),
                ("PIXELD_KAFKA__NOPE", "1"),
            ]),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("server.max_query_bytes")
                && text.contains("PIXELD_SERVER__MAX_QUERY_BYTES"),
            "{text}"
        );
        assert!(
            text.contains("kafka.nope") && text.contains("PIXELD_KAFKA__NOPE"),
            "{text}"
        );
    }

    #[test]
    fn secrets_come_from_files_and_a_missing_file_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        let previous = dir.path().join("previous");
        std::fs::write(
            &previous,
            "# rotated 2026-10\nf0e0d0c0b0a090807060504030201000\n",
        )
        .unwrap();
        let password = dir.path().join("kafka-password");
        std::fs::write(&password, "hunter2\n").unwrap();
        let text = format!(
            "[cookie]\nsecret_file = {:?}\nprevious_secrets_file = {:?}\n[kafka.librdkafka]\n\"sasl.password_file\" = {:?}\n",
            secret.display().to_string(),
            previous.display().to_string(),
            password.display().to_string()
        );
        let cfg = super::super::parse(&text, "test").unwrap();
        assert_eq!(
            cfg.cookie.secret,
            super::super::Secret::parse("000102030405060708090a0b0c0d0e0f")
        );
        assert_eq!(cfg.cookie.previous_secrets.len(), 1);
        assert_eq!(
            cfg.kafka.librdkafka["sasl.password"].as_str(),
            Some("hunter2")
        );
        let e = super::super::parse("[cookie]\nsecret_file = \"/nonexistent/secret\"\n", "test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cookie.secret_file: cannot read the file") && !e.contains("/nonexistent"),
            "{e}"
        );
    }

    #[test]
    fn the_readme_table_is_current() {
        let generated = table();
        crate::files::check_readme_section("env-table", &generated, "PIXELD_WRITE_ENV_TABLE");
        assert!(generated.contains("`PIXELD_KAFKA__BROKERS`"));
        assert!(generated.contains("`PIXELD_SERVER__LISTEN`"));
        assert!(generated.contains("`PIXELD_KAFKA__TOPICS__IMPRESSIONS`"));
    }
}
