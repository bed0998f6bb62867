//! What the gateway's outbound TLS trusts: vendors over https and wss, the media URLs it
//! archives, consumers' webhooks and the OTLP collector. The web PKI's roots, and the CA
//! certificates an operator adds (`tls_ca_file`) for a vendor, a self-hosted model server or
//! an egress proxy behind a private CA. (The archive's S3 bucket goes through
//! `object_store`'s own client, which is given the same certificates: `added_pem`.)
//!
//! Invariants:
//! - one trust for every outbound connection: a CA added is trusted for all of them, and no
//!   connection trusts less than the web PKI's roots (hyper-rustls is built without its
//!   web PKI feature, so `with_webpki_roots` does not compile: clients start from a `Trust`);
//! - added certificates come from PEM; a file with none, or with one that is not a usable CA
//!   certificate, is refused (the gateway does not start), never ignored;
//! - the protocols offered by ALPN are each client's own (`hyper_rustls` sets them): the
//!   shared config carries none.

use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
    /// The PEM the added certificates were read from (empty: none), for clients built on
    /// another TLS stack (the archive's bucket).
    added_pem: Arc<[u8]>,
}

impl Trust {
    /// The web PKI's roots only.
    pub fn web_pki() -> Trust {
        Trust::with_roots(web_pki_roots(), Arc::from([]))
    }

    /// The web PKI's roots and the CA certificates in `pem` (`source` names it in errors).
    pub fn adding(pem: &[u8], source: &str) -> Result<Trust, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = web_pki_roots();
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("{source}: not PEM certificates: {e}"))?;
            roots.add(cert).map_err(|e| format!("{source}: certificate {} is not a usable CA: {e}", added + 1))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{source}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)"));
        }
        Ok(Trust::with_roots(roots, Arc::from(pem)))
    }

    fn with_roots(roots: rustls::RootCertStore, added_pem: Arc<[u8]>) -> Trust {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Trust { config: Arc::new(config), added_pem }
    }

    /// The added CA certificates, as the PEM they were read from; empty: none.
    pub fn added_pem(&self) -> &[u8] {
        &self.added_pem
    }

    /// An https connector's builder with this trust; the caller picks its schemes and
    /// protocols (which set ALPN).
    pub fn https(&self) -> hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes> {
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*self.config).clone())
    }

    /// A TLS connector with this trust (for `wss`; no ALPN).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
    }
}

fn web_pki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::Trust;

    #[test]
    fn added_certificates_must_be_pem_and_usable() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = ca.cert.pem();
        assert_eq!(Trust::adding(pem.as_bytes(), "ca.pem").unwrap().added_pem(), pem.as_bytes());
        assert!(Trust::web_pki().added_pem().is_empty());
        let two = format!("{pem}{}", rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap().cert.pem());
        assert!(Trust::adding(two.as_bytes(), "ca.pem").is_ok());
        for (bad, says) in [
            ("".to_string(), "no certificate"),
            ("not a certificate\n".to_string(), "no certificate"),
            (ca.signing_key.serialize_pem(), "no certificate"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(), "not a usable CA"),
            (pem.replace("-----END CERTIFICATE-----", ""), "not PEM"),
        ] {
            let e = Trust::adding(bad.as_bytes(), "ca.pem").err().unwrap_or_else(|| panic!("accepted {bad:?}"));
            assert!(e.starts_with("ca.pem: ") && e.contains(says), "{bad:?}: {e}");
        }
    }
}
