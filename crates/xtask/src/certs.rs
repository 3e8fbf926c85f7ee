//! Certificates and keys for one run: a CA, kube-apiserver's serving
//! certificate for 127.0.0.1/localhost, and the service-account signing key
//! (ECDSA P-256).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::paths;

/// Paths of the generated files.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate (PEM); clients trust it.
    pub ca_cert: PathBuf,
    /// The apiserver's serving certificate (PEM).
    pub serving_cert: PathBuf,
    /// The apiserver's serving key (PEM).
    pub serving_key: PathBuf,
    /// The service-account signing key (PKCS#8 PEM).
    pub sa_key: PathBuf,
    /// The service-account verification key (PEM).
    pub sa_pub: PathBuf,
}

impl Certs {
    /// Generates every certificate and key into `dir`.
    pub fn generate(dir: &Path) -> Result<Certs> {
        let certs = Certs {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        let (ca_pem, ca) = certificate_authority()?;
        paths::write(&certs.ca_cert, ca_pem)?;

        let (cert_pem, key_pem) = serving_certificate(&ca)?;
        paths::write(&certs.serving_cert, cert_pem)?;
        paths::write(&certs.serving_key, key_pem)?;

        let sa = KeyPair::generate().context("generating the service-account key")?;
        paths::write(&certs.sa_key, sa.serialize_pem())?;
        paths::write(&certs.sa_pub, sa.public_key_pem())?;
        Ok(certs)
    }
}

/// A self-signed CA: its PEM certificate and an issuer for leaf certificates.
fn certificate_authority() -> Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "driftwarden test environment CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A serving certificate for the apiserver on loopback: (cert PEM, key PEM).
fn serving_certificate(ca: &Issuer<'static, KeyPair>) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the serving key")?;
    let names = ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default"];
    let mut params = CertificateParams::new(names.map(String::from).to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, ca)
        .context("signing the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}
