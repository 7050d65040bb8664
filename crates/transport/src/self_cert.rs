//! etcd's `SelfCert`: the certificate behind `--auto-tls` and `--peer-auto-tls`.
//!
//! etcd writes `cert.pem` and `key.pem` under `<data-dir>/fixtures/client` (or `fixtures/peer`) and reuses
//! them on restart when both exist; so do we. The certificate names every listen host (IP addresses as
//! IP SANs, anything else as DNS SANs) and is valid `--self-signed-cert-validity` years from now.
//! Dialers skip verification of such certificates, as etcd's do.
//!
//! Differences from etcd, all invisible to Go clients: the key is ECDSA P-256 (etcd uses P-521, which
//! ring cannot sign with); the certificate is not a CA but an end entity with server and client usage
//! (rustls refuses a CA certificate as a leaf, while Go accepts either when the certificate itself is
//! the trusted root); the files are written through a temporary file and a rename, key first, so a crash
//! leaves either both complete files or a pair that is regenerated.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::TlsError;
use crate::info::TlsInfo;
use crate::tlsutil::TlsOptions;

/// Returns the auto-TLS info for `dir`, generating the certificate unless both files already exist.
/// `hosts` are the listen URLs' `host:port` parts.
pub fn self_cert(
    dir: &Path,
    hosts: &[String],
    validity_years: u32,
    options: TlsOptions,
) -> Result<TlsInfo, TlsError> {
    if validity_years == 0 {
        return Err(TlsError::Config(
            "selfSignedCertValidity is invalid,it should be greater than 0".into(),
        ));
    }
    create_dir(dir)?;
    let dir = std::path::absolute(dir).map_err(|e| TlsError::read(dir, e))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !(cert_path.exists() && key_path.exists()) {
        generate(&cert_path, &key_path, hosts, validity_years)?;
    }
    Ok(TlsInfo {
        cert_file: Some(cert_path.clone()),
        key_file: Some(key_path.clone()),
        client_cert_file: Some(cert_path),
        client_key_file: Some(key_path),
        insecure_skip_verify: true,
        options,
        ..Default::default()
    })
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| TlsError::Write {
        path: dir.to_path_buf(),
        source: e,
    })
}

/// The host of a `host:port` (brackets of IPv6 removed); the whole string when there is no port.
fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match hostport.rsplit_once(':') {
        Some((h, _)) => h,
        None => hostport,
    }
}

fn generate(cert: &Path, key: &Path, hosts: &[String], years: u32) -> Result<(), TlsError> {
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::days(365 * i64::from(years));
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "hearth");
    params.not_before = now;
    params.not_after = not_after;
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    for h in hosts {
        let h = host_of(h);
        if h.is_empty() {
            continue;
        }
        let san = match h.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(h.to_string().try_into().map_err(gen_err)?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    tracing::warn!(
        certificate_validity_bound_not_after = %not_after,
        "automatically generate certificates"
    );
    let key_pair = rcgen::KeyPair::generate().map_err(gen_err)?;
    let certificate = params.self_signed(&key_pair).map_err(gen_err)?;
    write_atomically(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    tracing::info!(path = %key.display(), "created key file");
    write_atomically(cert, certificate.pem().as_bytes(), 0o644)?;
    tracing::info!(path = %cert.display(), "created cert file");
    Ok(())
}

fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let err = |e| TlsError::Write {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(Ok(d)) = path.parent().map(std::fs::File::open) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::CertSummary;

    #[test]
    fn generates_once_for_the_listen_hosts_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("fixtures").join("peer");
        let hosts = vec![
            "127.0.0.1:2380".to_string(),
            "node1.example:2380".to_string(),
            "[::1]:2380".to_string(),
        ];
        let info = self_cert(&d, &hosts, 2, TlsOptions::default()).unwrap();
        assert!(info.insecure_skip_verify);
        let cert = info.cert_file.clone().unwrap();
        assert_eq!(cert, d.join("cert.pem"));
        let pem = std::fs::read(&cert).unwrap();
        let der = crate::tlsutil::parse_certs(&cert, &pem).unwrap();
        let s = CertSummary::parse(&der[0]).unwrap();
        assert_eq!(s.dns_names, vec!["node1.example".to_string()]);
        assert_eq!(s.ip_addresses.len(), 2);
        let years = (s.not_after - s.not_before) / (365 * 86400);
        assert_eq!(years, 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(info.key_file.as_ref().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        self_cert(&d, &hosts, 1, TlsOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            pem,
            "existing files are reused"
        );
        assert_eq!(
            self_cert(&d, &hosts, 0, TlsOptions::default())
                .unwrap_err()
                .to_string(),
            "selfSignedCertValidity is invalid,it should be greater than 0"
        );
    }

    #[test]
    fn host_of_strips_ports_and_brackets() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
