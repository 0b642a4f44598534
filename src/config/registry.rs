//! `[registry]` and `[admin]`: where the stream registry lives and who may write to it.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub hook_secret: Option<String>,
    pub publish_tokens: Option<Vec<String>>,
    pub key_prefix: Option<String>,
    pub resync_interval: Option<String>,
    pub stream_lease: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
}

/// Which registry backend holds the stream → node map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryBackend {
    /// In-process maps: one gateway, nothing to run besides it.
    Memory,
    /// Shared through Redis, for several gateways; each keeps a local snapshot for lookups.
    Redis {
        url: String,
        /// Prefix of every key (inside a `{hash tag}`), so platforms can share one Redis.
        key_prefix: String,
        /// How long a gateway waits on the change log before checking, while idle, that it has
        /// missed nothing (Redis restarted, log trimmed).
        resync_interval: Duration,
    },
}

/// What the media-server hooks register a stream as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamKey {
    /// The stream name alone (`cam1`): one namespace for every application.
    #[default]
    Stream,
    /// `app/stream` (`live/cam1`): the hook's application is part of the key, and registry
    /// routes capture `{app}`.
    AppStream,
}

/// `[registry]`: the backend and the secrets that guard writes from media servers.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub backend: RegistryBackend,
    /// Hooks must carry `?secret=` equal to this; `None` turns the hook endpoints off.
    pub hook_secret: Option<String>,
    /// If not empty, a publish hook is accepted only with `token=` set to one of these.
    pub publish_tokens: Vec<String>,
    /// How long a stream record lives without renewal (node heartbeat, renew hook, new
    /// announcement); `None`: until withdrawn.
    pub stream_lease: Option<Duration>,
    /// `key`: how hooks key streams.
    pub key: StreamKey,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            backend: RegistryBackend::Memory,
            hook_secret: None,
            publish_tokens: Vec::new(),
            stream_lease: None,
            key: StreamKey::Stream,
        }
    }
}

/// `[admin]`: the REST API's bearer token; `None` turns `/api/v1` off.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    pub token: Option<String>,
}

pub(super) fn validate(r: &RawRegistry) -> Result<RegistrySettings, ConfigError> {
    let resync_interval = duration(
        "registry.resync_interval",
        &r.resync_interval,
        Duration::from_secs(1),
    )?;
    if resync_interval < Duration::from_millis(100) || resync_interval > Duration::from_secs(60) {
        return Err(invalid(
            "registry.resync_interval",
            "must be between 100ms and 60s",
        ));
    }
    let backend = match r.backend.as_deref().unwrap_or("memory") {
        "memory" => {
            if r.url.is_some() {
                return Err(invalid(
                    "registry.url",
                    "only used with backend = \"redis\"",
                ));
            }
            RegistryBackend::Memory
        }
        "redis" => {
            let url = r.url.clone().ok_or_else(|| {
                invalid(
                    "registry.url",
                    "missing: backend = \"redis\" needs url = \"redis://host:port\"",
                )
            })?;
            if let Err(why) = crate::registry::redis::Endpoint::parse(&url) {
                return Err(invalid("registry.url", format!("{url:?}: {why}")));
            }
            let key_prefix = r
                .key_prefix
                .clone()
                .unwrap_or_else(|| "streamgate".to_string());
            if key_prefix.is_empty() || key_prefix.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(
                    "registry.key_prefix",
                    "must be non-empty, without spaces",
                ));
            }
            RegistryBackend::Redis {
                url,
                key_prefix,
                resync_interval,
            }
        }
        other => {
            return Err(invalid(
                "registry.backend",
                format!("{other:?} is not one of memory, redis"),
            ))
        }
    };
    if let Some(s) = &r.hook_secret {
        if s.is_empty() {
            return Err(invalid(
                "registry.hook_secret",
                "cannot be empty (omit it to turn hooks off)",
            ));
        }
    }
    let publish_tokens = r.publish_tokens.clone().unwrap_or_default();
    for (i, t) in publish_tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(invalid(
                format!("registry.publish_tokens[{i}]"),
                "a token cannot be empty",
            ));
        }
    }
    if !publish_tokens.is_empty() && r.hook_secret.is_none() {
        return Err(invalid(
            "registry.publish_tokens",
            "publish tokens are checked by the hooks, which need registry.hook_secret",
        ));
    }
    let stream_lease = match &r.stream_lease {
        None => None,
        Some(_) => {
            let d = duration("registry.stream_lease", &r.stream_lease, Duration::ZERO)?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
                return Err(invalid(
                    "registry.stream_lease",
                    "must be between 1s and 24h (omit it for records that never expire)",
                ));
            }
            Some(d)
        }
    };
    let key = match r.key.as_deref().unwrap_or("stream") {
        "stream" => StreamKey::Stream,
        "app/stream" => StreamKey::AppStream,
        other => {
            return Err(invalid(
                "registry.key",
                format!("{other:?} is not one of \"stream\", \"app/stream\""),
            ))
        }
    };
    Ok(RegistrySettings {
        backend,
        hook_secret: r.hook_secret.clone(),
        publish_tokens,
        stream_lease,
        key,
    })
}
