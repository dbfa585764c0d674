//! `--key value` arguments: the campaign script passes many paths and
//! numbers, and named ones keep its calls readable.

use std::collections::HashMap;

pub struct Args(HashMap<String, String>);

impl Args {
    /// Parses `--key value` pairs; anything else is a usage error.
    pub fn parse(args: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else {
                usage(&format!("expected --KEY, got {key}"));
            };
            let Some(value) = it.next() else {
                usage(&format!("--{name} needs a value"));
            };
            map.insert(name.to_string(), value.clone());
        }
        Args(map)
    }

    /// A required argument.
    pub fn str(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| usage(&format!("--{key} is required")))
    }

    /// A required argument, parsed.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> T {
        self.str(key)
            .parse()
            .unwrap_or_else(|_| usage(&format!("--{key}: not a number")))
    }

    /// An optional argument, parsed, with its default.
    pub fn num_or<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.0.get(key) {
            Some(_) => self.num(key),
            None => default,
        }
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\n{}", super::USAGE);
    std::process::exit(2);
}
