//! Certificates made in the test with `rcgen`: a private CA and server
//! certificates it signs (valid, expired, or for another host name), written
//! as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};

/// A private certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

/// A server certificate and its key, PEM.
pub struct ServerCert {
    /// Leaf certificate followed by nothing else (the CA is the trust anchor).
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

/// Validity of a server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2020 to 4096.
    Current,
    /// Expired at the end of 2021.
    Expired,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str], validity: Validity) -> Result<ServerCert> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = match validity {
            Validity::Current => date_time_ymd(4096, 1, 1),
            Validity::Expired => date_time_ymd(2021, 12, 31),
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Write the CA certificate to `dir/<file>`; returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> Result<PathBuf> {
        let p = dir.join(file);
        std::fs::write(&p, &self.cert_pem)?;
        Ok(p)
    }
}

impl ServerCert {
    /// Write `dir/<stem>.pem` (chain) and `dir/<stem>.key`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let chain = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&chain, &self.chain_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((chain, key))
    }
}
