//! How Kafka clients prove who they are and check whom they talk to: TLS
//! (a CA to trust, an optional client certificate) and SASL (SCRAM or
//! PLAIN, the password read from a file).
//!
//! ```text
//! Security ──check()──▶ files readable, settings consistent (config load, `check`)
//!          ──apply()──▶ librdkafka properties of every producer, consumer and admin client
//! ```
//!
//! Passwords never live in these types: only the path of the file holding
//! one does, and it is read when a client is created, so `Debug` output and
//! logs cannot show it.

use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::ClientConfig;

/// The Kafka listener's security protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// No encryption, no authentication.
    #[default]
    Plaintext,
    /// TLS; the client may present a certificate.
    Ssl,
    /// SASL over an unencrypted connection.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl Protocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is encrypted.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SASL mechanism this build supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM with SHA-512 (the recommended one).
    ScramSha512,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// The password itself, over TLS only.
    Plain,
}

impl Mechanism {
    /// Every supported mechanism.
    pub const ALL: [Mechanism; 3] = [Self::ScramSha512, Self::ScramSha256, Self::Plain];

    /// The mechanism's name, as Kafka and librdkafka spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }

    /// The mechanism named `name` (case-insensitive), or why it is not
    /// available.
    pub fn parse(name: &str) -> Result<Self, String> {
        if let Some(known) = Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
        {
            return Ok(known);
        }
        let supported = "SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN";
        Err(match name.to_ascii_uppercase().as_str() {
            "OAUTHBEARER" => format!(
                "OAUTHBEARER is not supported: it needs a token issuer beside Kafka; use {supported}"
            ),
            "GSSAPI" => {
                format!("GSSAPI (Kerberos) is not supported by this build; use {supported}")
            }
            _ => format!("unknown SASL mechanism `{name}`: use {supported}"),
        })
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SASL credentials: a user name and the file holding its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The user name.
    pub username: String,
    /// A file whose content (without a final line break) is the password.
    pub password_file: PathBuf,
}

/// A client certificate and its key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate (chain), PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM, unencrypted.
    pub key_file: PathBuf,
}

/// How clients secure their connections; the default is plaintext with no
/// authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The listener's protocol.
    pub protocol: Protocol,
    /// PEM file of the CA certificates that signed the brokers'
    /// certificates; the system's trust store when absent.
    pub ca_file: Option<PathBuf>,
    /// A certificate to present to the brokers.
    pub client_cert: Option<ClientCert>,
    /// SASL credentials; required by, and only allowed with, the `sasl_*`
    /// protocols.
    pub sasl: Option<Sasl>,
}

/// The setting of [`Security`] a [`SecurityError`] is about, as named in
/// the config file under `bus.security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `protocol`.
    Protocol,
    /// `ca_file`.
    CaFile,
    /// `cert_file`.
    CertFile,
    /// `key_file`.
    KeyFile,
    /// `sasl`.
    Sasl,
    /// `sasl.username`.
    Username,
    /// `sasl.password_file`.
    PasswordFile,
}

impl Setting {
    /// The setting's path under `bus.security`, e.g. `sasl.password_file`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protocol => "protocol",
            Self::CaFile => "ca_file",
            Self::CertFile => "cert_file",
            Self::KeyFile => "key_file",
            Self::Sasl => "sasl",
            Self::Username => "sasl.username",
            Self::PasswordFile => "sasl.password_file",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Security settings that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The protocol needs SASL credentials and none are given.
    #[error(
        "protocol `{protocol}` authenticates with SASL: give `sasl` (mechanism, username, password_file)"
    )]
    SaslMissing {
        /// The protocol.
        protocol: Protocol,
    },
    /// SASL credentials are given but the protocol does not use them.
    #[error(
        "SASL credentials are given but protocol `{protocol}` does not use them: set protocol `sasl_ssl`"
    )]
    SaslUnused {
        /// The protocol.
        protocol: Protocol,
    },
    /// A TLS file is given but the protocol does not use TLS.
    #[error(
        "protocol `{protocol}` does not use TLS: set protocol `ssl` or `sasl_ssl`, or remove it"
    )]
    TlsUnused {
        /// The protocol.
        protocol: Protocol,
        /// The TLS setting given.
        setting: Setting,
    },
    /// PLAIN would send the password unencrypted.
    #[error(
        "PLAIN over `sasl_plaintext` sends the password unencrypted: use protocol `sasl_ssl`, or SCRAM-SHA-512"
    )]
    PlainWithoutTls,
    /// The SASL user name is empty.
    #[error("the SASL user name is empty")]
    EmptyUsername,
    /// A file cannot be read.
    #[error("cannot read {}: check the path and that Driftwarden may read the file", path.display())]
    Read {
        /// Which setting names the file.
        setting: Setting,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is empty or holds no PEM block of the expected kind.
    #[error("{} {problem}", path.display())]
    Content {
        /// Which setting names the file.
        setting: Setting,
        /// The file.
        path: PathBuf,
        /// What is wrong with it, e.g. `holds no password`.
        problem: &'static str,
    },
}

impl SecurityError {
    /// The setting at fault.
    pub fn setting(&self) -> Setting {
        match self {
            Self::SaslMissing { .. } | Self::SaslUnused { .. } => Setting::Sasl,
            Self::TlsUnused { setting, .. } => *setting,
            Self::PlainWithoutTls => Setting::Protocol,
            Self::EmptyUsername => Setting::Username,
            Self::Read { setting, .. } | Self::Content { setting, .. } => *setting,
        }
    }
}

impl Security {
    /// Checks that the settings fit together and that every file they name
    /// can be read and holds what it should (a PEM certificate, a PEM
    /// private key, a non-empty password). The password is read and dropped.
    pub fn check(&self) -> Result<(), SecurityError> {
        let protocol = self.protocol;
        match (&self.sasl, protocol.sasl()) {
            (None, true) => return Err(SecurityError::SaslMissing { protocol }),
            (Some(_), false) => return Err(SecurityError::SaslUnused { protocol }),
            _ => {}
        }
        if !protocol.tls() {
            let given = [
                (self.ca_file.is_some(), Setting::CaFile),
                (self.client_cert.is_some(), Setting::CertFile),
            ];
            if let Some((_, setting)) = given.into_iter().find(|(given, _)| *given) {
                return Err(SecurityError::TlsUnused { protocol, setting });
            }
        }
        if let Some(ca_file) = &self.ca_file {
            pem(Setting::CaFile, ca_file, "CERTIFICATE")?;
        }
        if let Some(cert) = &self.client_cert {
            pem(Setting::CertFile, &cert.cert_file, "CERTIFICATE")?;
            pem(Setting::KeyFile, &cert.key_file, "PRIVATE KEY")?;
        }
        if let Some(sasl) = &self.sasl {
            if sasl.mechanism == Mechanism::Plain && !protocol.tls() {
                return Err(SecurityError::PlainWithoutTls);
            }
            if sasl.username.trim().is_empty() {
                return Err(SecurityError::EmptyUsername);
            }
            read_password(&sasl.password_file)?;
        }
        Ok(())
    }

    /// Sets the librdkafka properties of these settings on `client`,
    /// reading the password file.
    pub(crate) fn apply(&self, client: &mut ClientConfig) -> Result<(), SecurityError> {
        client.set("security.protocol", self.protocol.as_str());
        if let Some(ca_file) = &self.ca_file {
            client.set("ssl.ca.location", ca_file.display().to_string());
        }
        if let Some(cert) = &self.client_cert {
            client
                .set(
                    "ssl.certificate.location",
                    cert.cert_file.display().to_string(),
                )
                .set("ssl.key.location", cert.key_file.display().to_string());
        }
        if let Some(sasl) = &self.sasl {
            let password = read_password(&sasl.password_file)?;
            client
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", password);
        }
        Ok(())
    }

    /// A one-line description without secrets, e.g.
    /// `sasl_ssl, SCRAM-SHA-512 as driftwarden, CA ca.pem`.
    pub fn summary(&self) -> String {
        let mut parts = vec![self.protocol.to_string()];
        if let Some(sasl) = &self.sasl {
            parts.push(format!("{} as {}", sasl.mechanism, sasl.username));
        }
        if let Some(cert) = &self.client_cert {
            parts.push(format!("client certificate {}", cert.cert_file.display()));
        }
        if self.protocol.tls() {
            parts.push(match &self.ca_file {
                Some(ca_file) => format!("CA {}", ca_file.display()),
                None => "the system's CAs".to_owned(),
            });
        }
        parts.join(", ")
    }
}

/// The librdkafka properties a [`Security`] or the clients themselves set;
/// extra options may not override them (aliases included).
pub(crate) const RESERVED_OPTIONS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
    "ssl.ca.location",
    "ssl.ca.pem",
    "ssl.certificate.location",
    "ssl.certificate.pem",
    "ssl.key.location",
    "ssl.key.pem",
    "ssl_key",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "group.id",
    "enable.auto.commit",
    "auto.commit.enable",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "message.max.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.message.max.bytes",
    "fetch.wait.max.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "socket.nagle.disable",
];

/// Reads a password file: its content without final line breaks; an empty
/// password is an error.
fn read_password(path: &Path) -> Result<String, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        setting: Setting::PasswordFile,
        path: path.to_owned(),
        source,
    })?;
    let password = text.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(SecurityError::Content {
            setting: Setting::PasswordFile,
            path: path.to_owned(),
            problem: "holds no password",
        });
    }
    Ok(password.to_owned())
}

/// Checks that `path` is readable and holds a PEM block whose label ends
/// with `label` (`CERTIFICATE`, `PRIVATE KEY`).
fn pem(setting: Setting, path: &Path, label: &str) -> Result<(), SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        setting,
        path: path.to_owned(),
        source,
    })?;
    let found = text.lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if found {
        return Ok(());
    }
    Err(SecurityError::Content {
        setting,
        path: path.to_owned(),
        problem: if label == "CERTIFICATE" {
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        } else {
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    /// A directory with `ca.pem`, `client.pem`, `client.key` and `password`.
    struct Files(tempfile::TempDir);

    impl Files {
        fn new() -> Self {
            let files = Self(tempfile::tempdir().expect("temp dir"));
            files.write("ca.pem", CERT);
            files.write("client.pem", CERT);
            files.write("client.key", KEY);
            files.write("password", "s3cret\n");
            files
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.path(name), text).expect("file written");
        }

        fn sasl_ssl(&self) -> Security {
            Security {
                protocol: Protocol::SaslSsl,
                ca_file: Some(self.path("ca.pem")),
                client_cert: Some(ClientCert {
                    cert_file: self.path("client.pem"),
                    key_file: self.path("client.key"),
                }),
                sasl: Some(Sasl {
                    mechanism: Mechanism::ScramSha512,
                    username: "driftwarden".into(),
                    password_file: self.path("password"),
                }),
            }
        }
    }

    #[test]
    fn complete_settings_pass_and_set_the_client_properties() {
        let files = Files::new();
        let security = files.sasl_ssl();
        security.check().expect("valid settings");
        let mut client = ClientConfig::new();
        security.apply(&mut client).expect("applied");
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.username"), Some("driftwarden"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
        let ca = files.path("ca.pem").display().to_string();
        assert_eq!(client.get("ssl.ca.location"), Some(ca.as_str()));
        assert!(client.get("ssl.key.location").is_some());
        for key in [
            "security.protocol",
            "sasl.password",
            "ssl.ca.location",
            "ssl.key.location",
        ] {
            assert!(RESERVED_OPTIONS.contains(&key), "{key} is reserved");
        }
    }

    #[test]
    fn the_default_is_plaintext_and_sets_only_the_protocol() {
        let security = Security::default();
        security.check().expect("plaintext is valid");
        let mut client = ClientConfig::new();
        security.apply(&mut client).expect("applied");
        assert_eq!(client.get("security.protocol"), Some("plaintext"));
        assert_eq!(client.get("sasl.username"), None);
    }

    #[test]
    fn debug_output_and_summary_never_show_the_password() {
        let files = Files::new();
        let security = files.sasl_ssl();
        let shown = format!("{security:?} {}", security.summary());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            security
                .summary()
                .starts_with("sasl_ssl, SCRAM-SHA-512 as driftwarden"),
            "{}",
            security.summary()
        );
    }

    #[test]
    fn inconsistent_settings_name_the_setting_at_fault() {
        let files = Files::new();
        let mut no_sasl = files.sasl_ssl();
        no_sasl.sasl = None;
        let mut unused_sasl = files.sasl_ssl();
        unused_sasl.protocol = Protocol::Ssl;
        let mut plaintext_ca = Security {
            protocol: Protocol::Plaintext,
            ..files.sasl_ssl()
        };
        plaintext_ca.sasl = None;
        plaintext_ca.client_cert = None;
        let mut plain_in_clear = files.sasl_ssl();
        plain_in_clear.protocol = Protocol::SaslPlaintext;
        plain_in_clear.ca_file = None;
        plain_in_clear.client_cert = None;
        if let Some(sasl) = &mut plain_in_clear.sasl {
            sasl.mechanism = Mechanism::Plain;
        }
        let mut nobody = files.sasl_ssl();
        if let Some(sasl) = &mut nobody.sasl {
            sasl.username = " ".into();
        }
        let cases = [
            (no_sasl, Setting::Sasl, "give `sasl`"),
            (unused_sasl, Setting::Sasl, "does not use them"),
            (plaintext_ca, Setting::CaFile, "does not use TLS"),
            (plain_in_clear, Setting::Protocol, "unencrypted"),
            (nobody, Setting::Username, "empty"),
        ];
        for (security, setting, says) in cases {
            let err = security.check().expect_err("invalid settings");
            assert_eq!(err.setting(), setting, "{err}");
            assert!(err.to_string().contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn unreadable_or_wrong_files_name_the_setting_and_the_file() {
        // (file, new text or None to remove it, setting)
        let cases: [(&str, Option<&str>, Setting); 6] = [
            ("ca.pem", None, Setting::CaFile),
            ("ca.pem", Some("not a certificate"), Setting::CaFile),
            ("client.pem", Some(KEY), Setting::CertFile),
            ("client.key", Some(CERT), Setting::KeyFile),
            ("password", Some("\n"), Setting::PasswordFile),
            ("password", None, Setting::PasswordFile),
        ];
        for (name, text, setting) in cases {
            let files = Files::new();
            match text {
                Some(text) => files.write(name, text),
                None => std::fs::remove_file(files.path(name)).expect("removed"),
            }
            let err = files.sasl_ssl().check().expect_err("bad file");
            assert_eq!(err.setting(), setting, "{name}: {err}");
            assert!(err.to_string().contains(name), "{err} names {name}");
        }
    }

    #[test]
    fn the_password_loses_only_its_final_line_break() {
        let files = Files::new();
        files.write("password", " pass word \r\n");
        let mut client = ClientConfig::new();
        files.sasl_ssl().apply(&mut client).expect("applied");
        assert_eq!(client.get("sasl.password"), Some(" pass word "));
    }

    #[test]
    fn mechanisms_parse_by_name_and_unsupported_ones_say_why() {
        assert_eq!(
            Mechanism::parse("scram-sha-512"),
            Ok(Mechanism::ScramSha512)
        );
        assert_eq!(
            Mechanism::parse("SCRAM-SHA-256"),
            Ok(Mechanism::ScramSha256)
        );
        assert_eq!(Mechanism::parse("PLAIN"), Ok(Mechanism::Plain));
        let oauth = Mechanism::parse("OAUTHBEARER").expect_err("unsupported");
        assert!(oauth.contains("token issuer"), "{oauth}");
        let kerberos = Mechanism::parse("gssapi").expect_err("unsupported");
        assert!(kerberos.contains("Kerberos"), "{kerberos}");
        let typo = Mechanism::parse("SCRAM-SHA-1").expect_err("unknown");
        assert!(typo.contains("SCRAM-SHA-512"), "{typo}");
    }
}
