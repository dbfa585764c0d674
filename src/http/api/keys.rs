//! `[[api_keys]]`: who is calling the server-side API. A bearer token is
//! compared with every key's secret in constant time, all of them each
//! time, so neither the time taken nor the answer tells which key (or how
//! much of one) was close.

use hyper::header::{HeaderMap, AUTHORIZATION};

use crate::config::{BearerToken, Config};
use crate::ids::{AdvertiserId, ApiKeyName};

/// One key, as the request path uses it.
#[derive(Debug)]
pub struct ApiKey {
    pub name: ApiKeyName,
    secret: BearerToken,
    pub advertisers: Vec<AdvertiserId>,
}

/// Every configured key; swapped whole on reload.
#[derive(Debug, Default)]
pub struct ApiKeys(Vec<ApiKey>);

impl ApiKeys {
    /// From a config that passed validation (entries without a valid name
    /// or secret were refused there; any left are skipped, never guessed).
    pub fn new(cfg: &Config) -> ApiKeys {
        let keys = cfg.api_keys.iter().filter_map(|k| {
            Some(ApiKey {
                name: ApiKeyName::new(&k.id)?,
                secret: k.secret.clone()?,
                advertisers: k.advertisers.clone(),
            })
        });
        ApiKeys(keys.collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key whose secret the `Authorization: Bearer` header carries.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<&ApiKey> {
        let value = headers.get(AUTHORIZATION)?.as_bytes();
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))?;
        let mut found = None;
        for key in &self.0 {
            // No early return: every secret is compared.
            if key.secret.matches(token) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        let cfg = crate::config::parse(
            "[[advertisers]]\nid = 100\n[[api_keys]]\nid = \"shop\"\nsecret = \"0123456789abcdef0123\"\nadvertisers = [100]\n",
            "test",
        )
        .unwrap();
        ApiKeys::new(&cfg)
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_whole_secret_as_a_bearer_token_authenticates() {
        let keys = keys();
        let key = keys
            .authenticate(&with("Bearer 0123456789abcdef0123"))
            .unwrap();
        assert_eq!(key.name.as_str(), "shop");
        assert_eq!(key.advertisers, [AdvertiserId(100)]);
        for bad in [
            "Bearer 0123456789abcdef012",
            "Bearer 0123456789abcdef01234",
            "Basic 0123456789abcdef0123",
            "0123456789abcdef0123",
            "Bearer ",
        ] {
            assert!(keys.authenticate(&with(bad)).is_none(), "{bad}");
        }
        assert!(keys.authenticate(&HeaderMap::new()).is_none());
        assert!(!format!("{keys:?}").contains("0123456789abcdef0123"));
    }
}
