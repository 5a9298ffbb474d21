//! Identities: the cluster's certificate authority, the certificates it issues to entities,
//! and the TLS configurations that make every connection mutually authenticated.
//!
//! Bootstrap makes a CA per cluster. Every daemon and client holds a certificate for its
//! entity name signed by it; a server requires the client's certificate and checks it
//! against the CA, a client checks that the server's certificate names the entity it meant
//! to reach. A valid certificate proves who the peer is; whether that identity is still
//! allowed in (not revoked) and what it may do is the receiver's check against the
//! monitors' registry. TLS 1.3 only, with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use proto::entity::EntityName;

/// The ALPN protocol of cairn connections: a peer speaking another version fails the
/// handshake with "no application protocol" instead of misreading frames.
pub const ALPN: &[u8] = b"cairn/1";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate authority: {0}")]
    Ca(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn invalid(what: impl Into<String>, reason: impl ToString) -> IdentityError {
    IdentityError::Invalid { what: what.into(), reason: reason.to_string() }
}

/// SHA-256 of a certificate's DER: what the monitors' registry pins for each identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Fingerprint {
    /// The first 8 bytes in hex, enough to tell certificates apart in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The cluster's certificate authority: its certificate, and the key to issue with.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
}

impl ClusterCa {
    /// A new CA for the cluster `fsid`.
    pub fn generate(fsid: &str) -> Result<ClusterCa, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("cairn cluster {fsid}"));
        params.distinguished_name = dn;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn from_pem(cert_pem: String, key_pem: String) -> Result<ClusterCa, IdentityError> {
        let ca = ClusterCa { cert_pem, key_pem };
        ca.issuer()?;
        Ok(ca)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IdentityError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| invalid("CA key", e))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| invalid("CA certificate", e))
    }

    /// A new key and certificate for `entity`, usable as client and as server.
    pub fn issue(&self, entity: &EntityName) -> Result<Credentials, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![entity.cert_name()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, entity.to_string());
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Credentials {
            entity: entity.clone(),
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What an entity needs to connect: the CA to trust, its certificate and its key.
#[derive(Clone)]
pub struct Credentials {
    pub entity: EntityName,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("entity", &self.entity).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The file names credentials are kept under in a directory.
    pub fn paths(dir: &Path, entity: &EntityName) -> [PathBuf; 3] {
        [dir.join("ca.crt"), dir.join(format!("{entity}.crt")), dir.join(format!("{entity}.key"))]
    }

    pub fn load(dir: &Path, entity: &EntityName) -> Result<Credentials, IdentityError> {
        let [ca, cert, key] = Credentials::paths(dir, entity);
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })
        };
        let creds = Credentials {
            entity: entity.clone(),
            ca_pem: read(&ca)?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
        };
        let (named, _) = peer_identity(&creds.cert_der()?)?;
        if &named != entity {
            return Err(invalid(
                cert.display().to_string(),
                format!("it is {named}, not {entity}"),
            ));
        }
        Ok(creds)
    }

    /// Writes the three files; the key readable by its owner only.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        let [ca, cert, key] = Credentials::paths(dir, &self.entity);
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { action, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        std::fs::write(&ca, &self.ca_pem).map_err(io("write", &ca))?;
        std::fs::write(&cert, &self.cert_pem).map_err(io("write", &cert))?;
        write_private(&key, self.key_pem.as_bytes()).map_err(io("write", &key))?;
        Ok(())
    }

    pub fn cert_der(&self) -> Result<CertificateDer<'static>, IdentityError> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| invalid(format!("certificate of {}", self.entity), e))
    }

    pub fn fingerprint(&self) -> Result<Fingerprint, IdentityError> {
        Ok(Fingerprint::of(&self.cert_der()?))
    }

    fn ca_roots(&self) -> Result<RootCertStore, IdentityError> {
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes())
            .map_err(|e| invalid("CA certificate", e))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        Ok(roots)
    }

    fn key_der(&self) -> Result<PrivateKeyDer<'static>, IdentityError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| invalid(format!("key of {}", self.entity), e))
    }

    /// TLS for accepting connections: a client certificate from the cluster CA is required.
    pub fn server_tls(&self) -> Result<rustls::ServerConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.ca_roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| invalid("client certificate verifier", e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert_der()?], self.key_der()?)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS for connecting: the server must present a certificate from the cluster CA.
    pub fn client_tls(&self) -> Result<rustls::ClientConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.ca_roots()?)
            .with_client_auth_cert(vec![self.cert_der()?], self.key_der()?)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

/// The server name a client expects when connecting to `entity`.
pub fn server_name(entity: &EntityName) -> Result<ServerName<'static>, IdentityError> {
    ServerName::try_from(entity.cert_name()).map_err(|e| invalid(format!("name of {entity}"), e))
}

/// The entity a verified certificate belongs to, and its fingerprint.
pub fn peer_identity(der: &CertificateDer<'_>) -> Result<(EntityName, Fingerprint), IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| invalid("peer certificate", e))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| invalid("peer certificate names", e))?
        .ok_or_else(|| invalid("peer certificate", "it names no entity"))?;
    let dns: Vec<&str> = names
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(*name),
            _ => None,
        })
        .collect();
    let [dns] = dns.as_slice() else {
        return Err(invalid("peer certificate", format!("it names {} entities", dns.len())));
    };
    let entity = EntityName::from_cert_name(dns).map_err(|e| invalid("peer certificate", e))?;
    Ok((entity, Fingerprint::of(der)))
}

/// Writes a file only its owner can read (keys).
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_entity() {
        let ca = ClusterCa::generate("test").unwrap();
        let osd = EntityName::osd(3);
        let creds = ca.issue(&osd).unwrap();
        let (entity, fingerprint) = peer_identity(&creds.cert_der().unwrap()).unwrap();
        assert_eq!(entity, osd);
        assert_eq!(fingerprint, creds.fingerprint().unwrap());
        // Reloading the CA from PEM issues certificates too.
        let again = ClusterCa::from_pem(ca.cert_pem().into(), ca.key_pem().into()).unwrap();
        let other = again.issue(&osd).unwrap();
        assert_ne!(other.fingerprint().unwrap(), fingerprint);
        assert!(creds.server_tls().is_ok() && creds.client_tls().is_ok());
    }

    #[test]
    fn credentials_round_trip_through_files() {
        let dir = std::env::temp_dir().join(format!("cairn-identity-{}", std::process::id()));
        let ca = ClusterCa::generate("test").unwrap();
        let admin = EntityName::client("admin").unwrap();
        let creds = ca.issue(&admin).unwrap();
        creds.save(&dir).unwrap();
        let loaded = Credentials::load(&dir, &admin).unwrap();
        assert_eq!(loaded.fingerprint().unwrap(), creds.fingerprint().unwrap());
        // A certificate saved under another name is refused.
        let mon = EntityName::mon("a").unwrap();
        std::fs::copy(dir.join("client.admin.crt"), dir.join("mon.a.crt")).unwrap();
        std::fs::copy(dir.join("client.admin.key"), dir.join("mon.a.key")).unwrap();
        let err = Credentials::load(&dir, &mon).unwrap_err().to_string();
        assert!(err.contains("it is client.admin, not mon.a"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
