//! The PostgreSQL catalog over TLS, as managed databases (RDS, Cloud SQL, Azure) expect it:
//! `sslmode` and `sslrootcert` in the URL are honoured. The test starts its own throwaway
//! cluster that accepts TLS connections only, with a server certificate from a CA made here:
//! `verify-full` with that CA connects (and the session is encrypted), with another CA it is
//! refused, and a connection without TLS is refused by the server.
//!
//! It needs the PostgreSQL server binaries (`initdb`, `pg_ctl` under /usr/lib/postgresql), which
//! the README's test command installs; run as root, the cluster runs as user `postgres`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use segport_catalog::{Admin, CatalogError, ConnectOptions, PgCatalog};

/// The newest PostgreSQL server binaries installed the Debian way.
fn server_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the PostgreSQL server binaries under /usr/lib/postgresql (the test command installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect("initdb and pg_ctl under /usr/lib/postgresql/*/bin")
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A cluster of its own, TLS only, stopped and removed on drop.
struct TlsCluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    /// Set when the cluster runs as user `postgres` (the test runs as root).
    as_postgres: bool,
    port: u16,
    /// The CA that signed the server's certificate, and another one.
    ca: PathBuf,
    other_ca: PathBuf,
}

impl TlsCluster {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn start() -> Self {
        let bin = server_bin();
        let as_postgres = output(Command::new("id").arg("-u")) == "0";
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let owner = as_postgres.then(|| {
            let id =
                |flag: &str| output(Command::new("id").args([flag, "postgres"])).parse().unwrap();
            (id("-u"), id("-g"))
        });
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cluster = Self {
            _dir: dir,
            data: data.clone(),
            bin,
            as_postgres,
            port,
            ca: PathBuf::new(),
            other_ca: PathBuf::new(),
        };
        output(cluster.command("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));

        // The CA and the server certificate it signs, for 127.0.0.1 and localhost.
        let ca = authority("segport test CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "segport test server");
        let server = params.signed_by(&server_key, &ca).unwrap();
        let root = data.parent().unwrap();
        cluster.ca = root.join("ca.pem");
        cluster.other_ca = root.join("other-ca.pem");
        std::fs::write(&cluster.ca, ca.pem()).unwrap();
        std::fs::write(&cluster.other_ca, authority("another CA").pem()).unwrap();
        let key = data.join("server.key");
        std::fs::write(data.join("server.crt"), server.pem()).unwrap();
        std::fs::write(&key, server_key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = owner {
            for file in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(file), Some(uid), Some(gid)).unwrap();
            }
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\n",
            root.display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        // TLS connections only.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        output(
            cluster
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(root.join("log"))
                .args(["-w", "-t", "60", "start"]),
        );
        cluster
    }

    fn url(&self, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A self-signed certificate authority.
fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

async fn connect(url: String) -> Result<PgCatalog, CatalogError> {
    PgCatalog::connect(&ConnectOptions::new(url)).await
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn verify_full_connects_with_the_right_root_only() {
    let cluster = TlsCluster::start();

    // The right root: the catalog migrates and answers, over an encrypted session.
    let url = cluster.url(&format!("sslmode=verify-full&sslrootcert={}", path(&cluster.ca)));
    let catalog = connect(url).await.expect("verify-full with the CA that signed the server");
    catalog.migrate().await.unwrap();
    catalog.ping().await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(catalog.pool())
            .await
            .unwrap();
    assert!(ssl, "the session is not encrypted");

    // Another root: refused, as a connection failure (the service reports it unavailable).
    let other =
        cluster.url(&format!("sslmode=verify-full&sslrootcert={}", path(&cluster.other_ca)));
    let refused = connect(other).await.err().expect("verify-full with a CA that did not sign");
    assert!(matches!(refused, CatalogError::Unavailable(_)), "{refused:?}");
    let chain = format!("{:?}", refused);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");

    // No TLS: the server takes TLS connections only.
    let plain = connect(cluster.url("sslmode=disable")).await.err().expect("a plain connection");
    assert!(format!("{plain:?}").contains("pg_hba.conf"), "{plain:?}");

    // `require` encrypts without checking the certificate, as libpq does.
    connect(cluster.url("sslmode=require")).await.expect("sslmode=require").ping().await.unwrap();
}
