//! Certificates and keys for one run: a CA, serving certificates for
//! 127.0.0.1/localhost signed by it (kube-apiserver's, the audit relay's,
//! Kafka's TLS listener's, and one for the Driftwarden audit webhooks tests
//! start), a client certificate for Kafka, and the service-account signing
//! key (ECDSA P-256).

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
    /// The audit relay's serving certificate (PEM).
    pub relay_cert: PathBuf,
    /// The audit relay's serving key (PEM).
    pub relay_key: PathBuf,
    /// A serving certificate for a Driftwarden audit webhook on loopback
    /// (PEM), for the receivers tests register.
    pub webhook_cert: PathBuf,
    /// Its key (PEM).
    pub webhook_key: PathBuf,
    /// Kafka's serving certificate for its TLS listener (PEM).
    pub kafka_cert: PathBuf,
    /// Its key (PEM).
    pub kafka_key: PathBuf,
    /// Kafka's key store: the key followed by the certificate, one PEM file
    /// (`ssl.keystore.type=PEM`).
    pub kafka_keystore: PathBuf,
    /// A client certificate Kafka's TLS listener accepts (PEM), signed by
    /// the CA.
    pub kafka_client_cert: PathBuf,
    /// Its key (PEM).
    pub kafka_client_key: PathBuf,
    /// The service-account signing key (PKCS#8 PEM).
    pub sa_key: PathBuf,
    /// The service-account verification key (PEM).
    pub sa_pub: PathBuf,
}

/// Names every loopback serving certificate is valid for.
const LOOPBACK: [&str; 2] = ["127.0.0.1", "localhost"];

impl Certs {
    /// The paths of the files in `dir`, generated or not.
    pub fn in_dir(dir: &Path) -> Certs {
        Certs {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            relay_cert: dir.join("audit-relay.crt"),
            relay_key: dir.join("audit-relay.key"),
            webhook_cert: dir.join("audit-webhook.crt"),
            webhook_key: dir.join("audit-webhook.key"),
            kafka_cert: dir.join("kafka.crt"),
            kafka_key: dir.join("kafka.key"),
            kafka_keystore: dir.join("kafka-keystore.pem"),
            kafka_client_cert: dir.join("kafka-client.crt"),
            kafka_client_key: dir.join("kafka-client.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        }
    }

    /// Generates every certificate and key into `dir`.
    pub fn generate(dir: &Path) -> Result<Certs> {
        let certs = Certs::in_dir(dir);
        let (ca_pem, ca) = certificate_authority()?;
        paths::write(&certs.ca_cert, ca_pem)?;

        let apiserver = [&LOOPBACK[..], &["kubernetes", "kubernetes.default"]].concat();
        let leaves = [
            (
                "kube-apiserver",
                &apiserver[..],
                &certs.serving_cert,
                &certs.serving_key,
            ),
            (
                "audit-relay",
                &LOOPBACK[..],
                &certs.relay_cert,
                &certs.relay_key,
            ),
            (
                "driftwarden-audit-webhook",
                &LOOPBACK[..],
                &certs.webhook_cert,
                &certs.webhook_key,
            ),
        ];
        for (name, names, cert, key) in leaves {
            let (cert_pem, key_pem) = leaf_certificate(&ca, name, names, Usage::Server)?;
            paths::write(cert, cert_pem)?;
            paths::write(key, key_pem)?;
        }
        let (cert_pem, key_pem) = leaf_certificate(&ca, "kafka", &LOOPBACK, Usage::Server)?;
        paths::write(&certs.kafka_keystore, format!("{key_pem}{cert_pem}"))?;
        paths::write(&certs.kafka_cert, cert_pem)?;
        paths::write(&certs.kafka_key, key_pem)?;
        let (cert_pem, key_pem) =
            leaf_certificate(&ca, "driftwarden-kafka-client", &[], Usage::Client)?;
        paths::write(&certs.kafka_client_cert, cert_pem)?;
        paths::write(&certs.kafka_client_key, key_pem)?;

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

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy)]
enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client.
    Client,
}

/// A certificate named `common_name` for `usage`, valid for `names` (IP
/// addresses become IP subject alternative names): (cert PEM, key PEM).
fn leaf_certificate(
    ca: &Issuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: Usage,
) -> Result<(String, String)> {
    let key =
        KeyPair::generate().with_context(|| format!("generating the key of {common_name}"))?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let cert = params
        .signed_by(&key, ca)
        .with_context(|| format!("signing the certificate of {common_name}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}
