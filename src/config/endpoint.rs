//! Where requests may go: https anywhere, plain http only where the traffic cannot leave the
//! machine, and never credentials in a URL (it is stored with the run).

use std::net::IpAddr;

use crate::config::SANDBOX_URL;

/// A URL setting that cannot be used. `setting` names it as the user wrote it: `--base-url`, or
/// `base_url` in a `--config` file. No message shows a URL's credentials.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{setting} {text:?} is not a URL ({source}); e.g. {SANDBOX_URL}")]
    NotAUrl {
        setting: &'static str,
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{setting} {shown}: remove the user:password part; Gemini authenticates with the API key, and the URL is stored with the run"
    )]
    Credentials {
        setting: &'static str,
        shown: String,
    },
    #[error(
        "{setting} {text}: plain http:// is allowed only to loopback addresses (127.0.0.1, ::1, localhost); use https://"
    )]
    PlainHttp { setting: &'static str, text: String },
    #[error("{setting} {shown}: must be an https:// URL, e.g. {SANDBOX_URL}")]
    NotHttps {
        setting: &'static str,
        shown: String,
    },
    #[error("{setting} {text}: give only scheme, host and port (the endpoint paths are added)")]
    NotBare { setting: &'static str, text: String },
    /// The proxy's text is not shown: it may hold credentials.
    #[error("{setting}: not a URL ({source})")]
    ProxyNotAUrl {
        setting: &'static str,
        #[source]
        source: url::ParseError,
    },
    #[error("{setting}: remove the user:password part; it would be stored with the run")]
    ProxyCredentials { setting: &'static str },
    #[error(
        "{setting} {host}: must be https:// (or http:// to a loopback address): the proxy sees the signed API key"
    )]
    ProxyNotSafe { setting: &'static str, host: String },
    /// Which of the two the operator meant is not ours to guess (a rehearsal's GEMINI_BASE_URL
    /// left exported is the usual way here).
    #[error("--sandbox and --base-url {url} name two exchanges; give one of them")]
    TwoExchanges { url: String },
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// https anywhere; http only where the traffic cannot leave the machine; never credentials in the
/// URL (they would be stored with the run). `setting` names it in messages.
pub fn validate_base_url(setting: &'static str, text: &str) -> Result<reqwest::Url, UrlError> {
    let url = reqwest::Url::parse(text).map_err(|source| UrlError::NotAUrl {
        setting,
        text: text.to_owned(),
        source,
    })?;
    // Named without the credentials, which must not reach the message either.
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials { setting, shown });
    }
    let text = text.to_owned();
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err(UrlError::PlainHttp { setting, text }),
        _ => return Err(UrlError::NotHttps { setting, shown }),
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(UrlError::NotBare { setting, text });
    }
    Ok(url)
}

/// The proxy follows the base URL's rule: it sees the signed key, so https, or http that stays on
/// the machine.
pub fn validate_proxy(setting: &'static str, text: &str) -> Result<reqwest::Url, UrlError> {
    let url =
        reqwest::Url::parse(text).map_err(|source| UrlError::ProxyNotAUrl { setting, source })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::ProxyCredentials { setting });
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(UrlError::ProxyNotSafe {
            setting,
            host: url.host_str().unwrap_or("?").to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback() {
        for ok in [
            "https://api.gemini.com",
            "https://api.sandbox.gemini.com/",
            "http://127.0.0.1:8080",
            "http://127.9.9.9:1",
            "http://[::1]:80",
            "http://localhost:3000",
        ] {
            assert!(validate_base_url("--base-url", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.gemini.com",
            "http://10.0.0.1",
            "http://192.168.1.10:8080",
            "ftp://127.0.0.1",
            "api.gemini.com",
            "https://api.gemini.com/v1",
            "https://user:hunter2@api.gemini.com",
            "http://ops:hunter2@127.0.0.1:8080",
        ] {
            let err = validate_base_url("--base-url", bad).unwrap_err();
            assert!(err.to_string().starts_with("--base-url "), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_proxy_must_keep_the_key_encrypted_or_on_the_machine() {
        assert!(validate_proxy("--proxy", "https://proxy.corp.example:3128").is_ok());
        assert!(validate_proxy("--proxy", "http://127.0.0.1:3128").is_ok());
        for bad in [
            "http://proxy.corp.example:3128",
            "socks5://127.0.0.1:1080",
            "https://u:hunter2@proxy.corp.example",
            "not a url",
        ] {
            let err = validate_proxy("--proxy", bad).unwrap_err().to_string();
            assert!(err.starts_with("--proxy"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
