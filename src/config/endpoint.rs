//! Where requests may go: https anywhere, plain http only where the traffic cannot leave the
//! machine, and never credentials in a URL (it is stored with the run).

use std::net::IpAddr;

use crate::config::SANDBOX_URL;
use crate::error::Error;

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// https anywhere; http only where the traffic cannot leave the machine; never credentials in the
/// URL (they would be stored with the run).
pub fn validate_base_url(text: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        Error::Config(format!(
            "--base-url {text:?} is not a URL ({e}); e.g. {SANDBOX_URL}"
        ))
    })?;
    // Named without the credentials, which must not reach the message either.
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(format!(
            "--base-url {shown}: remove the user:password part; Gemini authenticates with the API key, and the URL is stored with the run"
        )));
    }
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Error::Config(format!(
                "--base-url {text}: plain http:// is allowed only to loopback addresses (127.0.0.1, ::1, localhost); use https://"
            )));
        }
        _ => {
            return Err(Error::Config(format!(
                "--base-url {shown}: must be an https:// URL, e.g. {SANDBOX_URL}"
            )));
        }
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(Error::Config(format!(
            "--base-url {text}: give only scheme, host and port (the endpoint paths are added)"
        )));
    }
    Ok(url)
}

/// The proxy follows the base URL's rule: it sees the signed key, so https, or http that stays on
/// the machine.
pub fn validate_proxy(text: &str) -> Result<reqwest::Url, Error> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| Error::Config(format!("--proxy: not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config(
            "--proxy: remove the user:password part; it would be stored with the run".into(),
        ));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err(Error::Config(format!(
            "--proxy {}: must be https:// (or http:// to a loopback address): the proxy sees the signed API key",
            url.host_str().unwrap_or("?")
        ))),
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
            assert!(validate_base_url(ok).is_ok(), "{ok}");
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
            let err = validate_base_url(bad).unwrap_err();
            assert_eq!(err.exit(), crate::exit::Exit::BadInput, "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_proxy_must_keep_the_key_encrypted_or_on_the_machine() {
        assert!(validate_proxy("https://proxy.corp.example:3128").is_ok());
        assert!(validate_proxy("http://127.0.0.1:3128").is_ok());
        for bad in [
            "http://proxy.corp.example:3128",
            "socks5://127.0.0.1:1080",
            "https://u:hunter2@proxy.corp.example",
            "not a url",
        ] {
            let err = validate_proxy(bad).unwrap_err().to_string();
            assert!(err.starts_with("--proxy"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
