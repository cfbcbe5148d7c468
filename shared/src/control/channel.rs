//! The internal channel between admin and engines: the rules its keys
//! follow, and its TLS on both ends.
//!
//! The channel carries every project's secret hashes and signing keys
//! (snapshot push and pull), verification counts (traffic) and dry-run
//! checks, so it is authenticated with **one key per direction** and can
//! run over TLS:
//!
//! - `QYZAR_ENGINE_PUSH_KEY`: admin → engine (`PUT /internal/snapshot`).
//!   An engine holds it only to check it.
//! - `QYZAR_ADMIN_ENGINE_REPORT_KEY`: engine → admin (`GET
//!   /internal/snapshot`, `POST /internal/traffic`). Admin holds it only to
//!   check it, so a key taken from an engine cannot rewrite another
//!   engine's configuration. When it is unset both sides fall back to the
//!   push key (the single shared key of earlier releases) and warn at start.
//!
//! Both must be at least [`MIN_KEY_BYTES`] bytes of printable ASCII, and
//! must differ: [`check_key`] and [`check_key_pair`] are what both
//! services run at start, refusing to start otherwise.
//!
//! TLS: a client checks the server's certificate against [`Trust`]: the
//! Mozilla roots (a public CA, the default), a configured CA (a PEM file),
//! or pinned certificates (the SHA-256 of the server certificate's DER,
//! hex; the pin replaces chain and name checks, so a self-signed
//! certificate works). A server loads its certificate chain and key from
//! PEM files ([`server_config`]).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Shortest key accepted for either direction: 32 bytes, which a random
/// key from `openssl rand -base64 32` (44 characters) passes easily.
pub const MIN_KEY_BYTES: usize = 32;

/// Checks one channel key: at least [`MIN_KEY_BYTES`] bytes, printable
/// ASCII without spaces (it travels in an `Authorization` header). The
/// error names `var` and never contains the key.
pub fn check_key(var: &str, key: &str) -> Result<(), String> {
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "{var} is {} bytes long; channel keys must be at least {MIN_KEY_BYTES} bytes \
             (generate one with `openssl rand -base64 32`)",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{var} must be printable ASCII without spaces (it is sent in an Authorization header)"
        ));
    }
    Ok(())
}

/// Checks both keys as a service holds them: each passes [`check_key`] and,
/// when both are set, they differ (one key per direction).
pub fn check_key_pair(push: Option<&str>, report: Option<&str>) -> Result<(), String> {
    if let Some(k) = push {
        check_key("QYZAR_ENGINE_PUSH_KEY", k)?;
    }
    if let Some(k) = report {
        check_key("QYZAR_ADMIN_ENGINE_REPORT_KEY", k)?;
    }
    if let (Some(p), Some(r)) = (push, report) {
        if crate::crypto::ct_eq(p.as_bytes(), r.as_bytes()) {
            return Err(
                "QYZAR_ADMIN_ENGINE_REPORT_KEY must differ from QYZAR_ENGINE_PUSH_KEY: \
                        one key per direction"
                    .into(),
            );
        }
    }
    Ok(())
}

/// How a client of the channel checks the server's certificate (for
/// `https://` URLs; `http://` ones carry no TLS at all).
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The Mozilla root programme (webpki-roots): a server with a
    /// certificate from a public CA.
    #[default]
    PublicRoots,
    /// Certificates issued by these CAs (a private CA), with the usual
    /// chain, validity and host-name checks.
    Ca(Vec<CertificateDer<'static>>),
    /// Exactly these server certificates, by SHA-256 of their DER: no chain
    /// or name check, so a self-signed certificate works; list two pins to
    /// roll a certificate without downtime.
    Pins(Vec<[u8; 32]>),
}

impl Trust {
    /// The trust a service is configured with: `ca_file` (PEM, one or more
    /// certificates) or `pins` (comma-separated hex SHA-256, colons
    /// allowed), not both; neither is [`Trust::PublicRoots`].
    pub fn from_settings(ca_file: Option<&str>, pins: Option<&str>) -> Result<Self, String> {
        match (ca_file, pins) {
            (Some(_), Some(_)) => Err("give a CA file or certificate pins, not both".into()),
            (Some(path), None) => {
                let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                Ok(Trust::Ca(
                    certificates(&pem).map_err(|e| format!("{path}: {e}"))?,
                ))
            }
            (None, Some(text)) => Ok(Trust::Pins(parse_pins(text)?)),
            (None, None) => Ok(Trust::PublicRoots),
        }
    }

    /// A rustls client configuration checking servers this way.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = match self {
            Trust::PublicRoots => builder
                .with_root_certificates(rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
                .with_no_client_auth(),
            Trust::Ca(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs {
                    roots
                        .add(c.clone())
                        .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Pins(pins) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    pins: pins.clone(),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        // No ALPN here: the hyper-rustls connector sets the protocols it
        // speaks (HTTP/1.1) itself and refuses a configuration that has any.
        config.alpn_protocols.clear();
        Ok(config)
    }
}

/// The connector every channel client uses: `http://` plain, `https://`
/// checked by `trust`; 5 s to connect, no Nagle delay.
pub fn connector(trust: &Trust) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(trust.client_config()?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Checks a channel base URL: `http` or `https`, a host, and no
/// credentials (keys belong in their variables, where they are never
/// logged). `what` names the setting in the error.
pub fn check_url(url: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| format!("{what}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{what} must start with http:// or https://")),
    }
    match uri.authority() {
        None => Err(format!("{what} has no host")),
        Some(a) if a.as_str().contains('@') => Err(format!(
            "{what} must not carry credentials; the keys have their own variables"
        )),
        Some(_) => Ok(uri),
    }
}

/// The certificates in a PEM document (at least one).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate list: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM document".into());
    }
    Ok(certs)
}

/// The SHA-256 pin of a certificate (its DER), as pins are configured.
pub fn pin_of(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A pin as hex, the form [`parse_pins`] reads.
pub fn pin_hex(pin: &[u8; 32]) -> String {
    pin.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses comma-separated SHA-256 pins: 64 hex digits each, colons (as
/// `openssl x509 -fingerprint -sha256` prints them) and case ignored.
pub fn parse_pins(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut pins = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let hex: String = item.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a certificate pin must be the 64 hex digits of a SHA-256, not {item:?}"
            ));
        }
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("{item:?} is not hex"))?;
        }
        pins.push(pin);
    }
    if pins.is_empty() {
        return Err("no certificate pin given".into());
    }
    Ok(pins)
}

/// A TLS server configuration from PEM files: the certificate chain
/// (server certificate first) and its private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_file: &str, key_file: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = std::fs::read(cert_file).map_err(|e| format!("{cert_file}: {e}"))?;
    let key = std::fs::read(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    server_config_from_pem(&certs, &key)
}

/// [`server_config`] from PEM bytes.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("not a PEM private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts exactly the pinned certificates; handshake signatures are still
/// checked, so only the holder of the pinned certificate's key gets through.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = pin_of(end_entity.as_ref());
        if self
            .pins
            .iter()
            .fold(false, |hit, p| hit | crate::crypto::ct_eq(p, &got))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_printable_and_one_per_direction() {
        assert!(check_key("K", "short").unwrap_err().contains("at least 32"));
        assert!(check_key("K", &"a".repeat(31)).is_err());
        assert!(check_key("K", &"a".repeat(32)).is_ok());
        assert!(check_key("K", &format!("{} b", "a".repeat(32))).is_err());
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        assert!(check_key_pair(Some(&a), Some(&b)).is_ok());
        assert!(check_key_pair(Some(&a), None).is_ok());
        let same = check_key_pair(Some(&a), Some(&a)).unwrap_err();
        assert!(same.contains("must differ") && !same.contains(&a));
        assert!(check_key_pair(Some("x"), Some(&b))
            .unwrap_err()
            .contains("QYZAR_ENGINE_PUSH_KEY"));
    }

    #[test]
    fn pins_parse_in_both_spellings() {
        let pin = pin_of(b"certificate");
        let hex = pin_hex(&pin);
        let colons: String = hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_pins(&hex).unwrap(), vec![pin]);
        assert_eq!(
            parse_pins(&format!("{colons}, {hex}")).unwrap(),
            vec![pin, pin]
        );
        assert!(parse_pins("abcd").is_err());
        assert!(parse_pins(" , ").is_err());
        assert!(Trust::from_settings(Some("/x"), Some(&hex)).is_err());
    }

    #[test]
    fn urls_are_http_or_https_without_credentials() {
        assert!(check_url("http://admin:1", "U").is_ok());
        assert!(check_url("https://admin:1", "U").is_ok());
        assert!(check_url("ftp://admin:1", "U").is_err());
        assert!(check_url("http://u:p@admin:1", "U").is_err());
    }
}
