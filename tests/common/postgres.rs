//! A PostgreSQL server of the test's own: `initdb` into a temp dir, `postgres` on a free port on
//! 127.0.0.1 (never the machine's server on 5432), queried with `psql`. The binaries are found
//! under `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package) or on `PATH`. PostgreSQL
//! refuses to run as root: as root, the data directory is handed to the `postgres` user and the
//! server runs as that user (`setpriv`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// The user the server runs as when the tests run as root.
const SERVER_USER: &str = "postgres";

pub struct PgServer {
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// `-c name=value` settings beyond the usual ones (TLS).
    extra: Vec<String>,
}

/// The certificates of a server started with [`PgServer::start_tls`].
pub struct TlsFiles {
    /// The CA that signed the server's certificate (for `IP:127.0.0.1` and `DNS:localhost`).
    pub ca: PathBuf,
    /// Another CA, which signed nothing the server has.
    pub wrong_ca: PathBuf,
}

/// The directory holding `initdb`, `postgres` and `psql`, the newest version first.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = found.pop() {
        return newest;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("sh");
    let path = String::from_utf8_lossy(&on_path.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "PostgreSQL's initdb is needed (apt-get install postgresql)"
    );
    Path::new(&path).parent().expect("bin dir").to_path_buf()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl PgServer {
    /// A fresh cluster, started and accepting connections.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let owned = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                owned.success(),
                "chown {SERVER_USER}: {}",
                dir.path().display()
            );
        }
        let out = Self::as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "barkeep",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self {
            child: None,
            port: free_port(),
            bin,
            dir,
            extra: Vec::new(),
        };
        server.restart();
        server
    }

    /// A fresh cluster with `ssl=on` and a certificate made here with the `openssl` command,
    /// accepting TCP connections over TLS only (`hostssl` in `pg_hba.conf`).
    pub fn start_tls() -> (Self, TlsFiles) {
        let mut server = Self::start();
        let tls = server.dir.path().join("tls");
        std::fs::create_dir(&tls).expect("tls dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&tls)
                .output()
                .expect("the openssl command (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "wrong_ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=barkeep test {ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
            ];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=keyCertSign,cRLSign",
            ]);
            openssl(&args);
        }
        let mut args = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ];
        args.extend(ec);
        openssl(&args);
        std::fs::write(
            tls.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        // PostgreSQL reads the key only if its user owns it and nobody else may read it.
        if is_root() {
            let owned = Command::new("chown")
                .arg("-R")
                .arg(format!("{SERVER_USER}:"))
                .arg(&tls)
                .status()
                .expect("chown");
            assert!(owned.success());
        }
        std::fs::set_permissions(
            tls.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod");
        let hba = server.dir.path().join("data/pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        server.extra = vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", tls.join("server.crt").display()),
            format!("ssl_key_file={}", tls.join("server.key").display()),
        ];
        server.kill();
        server.restart();
        let files = TlsFiles {
            ca: tls.join("ca.crt"),
            wrong_ca: tls.join("wrong_ca.crt"),
        };
        (server, files)
    }

    /// `program` as the user the server runs as.
    fn as_server_user(program: &Path) -> Command {
        if is_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid",
                SERVER_USER,
                "--regid",
                SERVER_USER,
                "--init-groups",
                "--",
            ]);
            cmd.arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    /// `postgres://…` for barkeep's `POSTGRES_URL`.
    pub fn url(&self) -> String {
        format!("postgres://barkeep@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on the same port, with the data it had.
    pub fn restart(&mut self) {
        let child = Self::as_server_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=50",
            ])
            .args(self.extra.iter().flat_map(|e| ["-c", e.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        wait_for(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            self.try_sql("SELECT 1").filter(|s| s == "1")
        })
        .expect("PostgreSQL accepts connections");
    }

    /// Stops the server at once (a crash, or the network gone): clients see refused
    /// connections until [`PgServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed postmaster leaves its backends to notice on their own; wait until the port
        // is free so a restart can bind it.
        wait_for(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", self.port))
                .is_err()
                .then_some(())
        })
        .expect("PostgreSQL gone");
        let pid = self.dir.path().join("data/postmaster.pid");
        wait_for(Duration::from_secs(30), || {
            let stale = std::fs::read_to_string(&pid).ok()?;
            let alive = stale
                .lines()
                .next()
                .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            (!alive).then_some(())
        });
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U", "barkeep", "-d", "postgres", "-X", "-q", "-t", "-A", "-c", sql,
            ])
            .stderr(Stdio::piped())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The text `psql -tA` prints for `sql` (rows on lines, columns split by `|`).
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("psql failed: {sql}"))
    }

    /// A query answering one number.
    pub fn sql_u64(&self, sql: &str) -> u64 {
        let out = self.sql(sql);
        out.parse()
            .unwrap_or_else(|_| panic!("{sql} answered {out:?}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
