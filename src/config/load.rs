//! Reading the file: every problem is collected with its key path, so an
//! operator fixes a broken file in one pass instead of one error per start.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

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

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: source.clone(),
        problems: vec![Problem {
            path: String::new(),
            message: format!("cannot read the file: {e}; pass another one with --config PATH"),
        }],
    })?;
    parse(&text, &source)
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
];

/// Parses and validates TOML text; `source` names it in the report.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        source: source.to_string(),
        problems,
    };
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(fail(vec![Problem {
                path: String::new(),
                message: format!("not valid TOML: {}", e.to_string().trim_end()),
            }]))
        }
    };
    let mut problems = Vec::new();
    let mut cfg = Config::default();
    for (key, value) in table {
        let p = &mut problems;
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
            "advertisers" => cfg.advertisers = list(value, &key, p),
            "line_items" => cfg.line_items = list(value, &key, p),
            "impression_trackers" => cfg.impression_trackers = list(value, &key, p),
            "click_trackers" => cfg.click_trackers = list(value, &key, p),
            "conversion_pixels" => cfg.conversion_pixels = list(value, &key, p),
            "segments" => cfg.segments = list(value, &key, p),
            _ => p.push(Problem {
                path: key.clone(),
                message: format!("unknown section; expected one of {}", SECTIONS.join(", ")),
            }),
        }
    }
    problems.extend(super::validate::validate(&cfg));
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(fail(problems))
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
